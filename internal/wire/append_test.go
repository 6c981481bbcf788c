package wire

import (
	"bytes"
	"encoding/binary"
	"testing"
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
			if got := special8(binary.LittleEndian.Uint64(w[:])); got != want {
				t.Fatalf("byte %#x at %d: got %v", v, pos, got)
			}
		}
	}
}
