package wire

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strconv"
	"testing"
	"unicode/utf8"
)

func TestEnvelopeHalves(t *testing.T) {
	for _, typ := range []string{"ping", "é\n\"x"} {
		for _, tx := range []string{"", "t1", "0f8fad5b-d9cb-469f-a165-70867728950e"} {
			for _, p := range [][]byte{[]byte("{}"), []byte(`"a"`), {}} {
				for _, d := range []int64{0, 1, -5, 1700000000123} {
					want := AppendJSON([]byte("x"), typ, tx, p, d)
					got := AppendJSONTail(append(AppendJSONHead([]byte("x"), typ, tx), p...), d)
					if !bytes.Equal(got, want) {
						t.Errorf("JSON %q %q %q %d:\n got %s\nwant %s", typ, tx, p, d, got, want)
					}
					want = AppendBinary([]byte("x"), typ, tx, p, d)
					got = append(AppendBinaryHead([]byte("x"), typ, tx, d), p...)
					if !bytes.Equal(got, want) {
						t.Errorf("binary %q %q %q %d:\n got %q\nwant %q", typ, tx, p, d, got, want)
					}
				}
			}
		}
	}
}

func TestSpecial8(t *testing.T) {
	for pos := range 8 {
		for v := range 256 {
			var w [8]byte
			for i := range w {
				w[i] = 'a'
			}
			w[pos] = byte(v)
			want := v < 0x20 || v == '"' || v == '\\'
			m := special8(binary.LittleEndian.Uint64(w[:]))
			if (m != 0) != want || want && bits.TrailingZeros64(m)>>3 != pos {
				t.Fatalf("byte %#x at %d: mask %#x", v, pos, m)
			}
		}
	}
}

func TestParseInt64(t *testing.T) {
	for _, in := range []string{"0", "-0", "+0", "1", "-1", "+17", "1700000000123", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "-9223372036854775809", "99999999999999999999",
		"", "-", "+", "1.5", "1e3", " 1", "1_000", "0x10", "007", "--1"} {
		want, err := strconv.ParseInt(in, 10, 64)
		got, ok := parseInt64([]byte(in))
		if ok != (err == nil) || ok && got != want {
			t.Errorf("%q: got %d, %v; want %d, %v", in, got, ok, want, err)
		}
	}
}

// appendStringRef is AppendString one byte at a time, as it was written
// first.
func appendStringRef(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\':
			dst = append(dst, c)
			i++
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c == '\n':
			dst = append(dst, '\\', 'n')
			i++
		default:
			r, size := rune(c), 1
			if c >= utf8.RuneSelf {
				r, size = utf8.DecodeRuneInString(s[i:])
			}
			dst = appendRuneEscape(dst, r)
			i += size
		}
	}
	return append(dst, '"')
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "ping", "0f8fad5b-d9cb-469f-a165-70867728950e", "a\"b\\c\nd\x01é🎉\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := AppendString([]byte("x"), s), appendStringRef([]byte("x"), s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}
