package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func collect(each func([]byte, func([]byte) bool) error, b []byte) ([]string, error) {
	var out []string
	err := each(b, func(e []byte) bool { out = append(out, string(e)); return true })
	return out, err
}

func TestEachJSON(t *testing.T) {
	for in, want := range map[string]string{
		`[]`:                                ``,
		` [ 1 , "a,]" ,{"k":[1,2]},null ] `: `1|"a,]"|{"k":[1,2]}|null`,
		`[-1.5e3]`:                          `-1.5e3`,
	} {
		got, err := collect(EachJSON, []byte(in))
		if err != nil || strings.Join(got, "|") != want {
			t.Errorf("%s: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{``, `{}`, `[1`, `[1,]`, `[1 2]`, `[1]x`, `["a]`, `[{]`} {
		if got, err := collect(EachJSON, []byte(in)); err == nil {
			t.Errorf("%s: no error (got %q)", in, got)
		}
	}
}

func TestEachCBOR(t *testing.T) {
	items := []any{0, -1, 1 << 40, "s", []byte("bytes"), []any{1, []any{2, "x"}}, map[string]any{"k": []int{1}}, 1.5, true, nil, cbor.Tag{Number: 1, Content: 5}}
	var want [][]byte
	def, _ := cbor.Marshal(items)
	indef := []byte{0x9f}
	for _, it := range items {
		e, err := cbor.Marshal(it)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
		indef = append(indef, e...)
	}
	indef = append(indef, 0xff)
	// An indefinite byte string and array inside an element.
	nested := []byte{0x9f, 0x5f, 0x41, 'a', 0x41, 'b', 0xff, 0x9f, 0x01, 0x9f, 0xff, 0xff, 0xff}
	for name, b := range map[string][]byte{"definite": def, "indefinite": indef} {
		got, err := collect(EachCBOR, b)
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: %d elements, %v", name, len(got), err)
		}
		for i := range got {
			if !bytes.Equal([]byte(got[i]), want[i]) {
				t.Errorf("%s: element %d: % x, want % x", name, i, got[i], want[i])
			}
		}
	}
	if got, err := collect(EachCBOR, nested); err != nil || len(got) != 2 || len(got[0]) != 6 || len(got[1]) != 5 {
		t.Errorf("nested: %q, %v", got, err)
	}
	for _, b := range [][]byte{nil, {0x01}, {0x82, 0x01}, {0x9f, 0x01}, {0x81, 0x45, 'a'}, {0x81, 0x1c}, {0x81, 0xff}, {0x81, 0x01, 0x02},
		{0x81, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x81, 0x3f}, {0x9f, 0x01, 0xff, 0x00}} {
		if got, err := collect(EachCBOR, b); err == nil {
			t.Errorf("% x: no error (got %q)", b, got)
		}
	}
	// Stopping early.
	n := 0
	if err := EachCBOR(def, func([]byte) bool { n++; return n < 3 }); err != nil || n != 3 {
		t.Errorf("stop: n %d, %v", n, err)
	}
}

func FuzzEachCBOR(f *testing.F) {
	f.Add([]byte{0x9f, 0x5f, 0x41, 'a', 0xff, 0xff})
	f.Add([]byte{0x82, 0xa1, 0x61, 'k', 0x01, 0xc1, 0x05})
	dm, err := cbor.DecOptions{MaxNestedLevels: 65535}.DecMode()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var elems [][]byte
		if err := EachCBOR(b, func(e []byte) bool { elems = append(elems, e); return true }); err != nil {
			if len(b) > 0 && b[0]>>5 == 4 && dm.Wellformed(b) == nil {
				t.Fatalf("% x: a well-formed array refused: %v", b, err)
			}
			return
		}
		// Every element the walker accepts is one item fxamacker accepts.
		for _, e := range elems {
			if err := dm.Wellformed(e); err != nil {
				t.Fatalf("% x: element % x is not well formed: %v", b, e, err)
			}
		}
	})
}

// skipPlain finds what the byte-by-byte search finds, wherever it is.
func TestSkipPlain(t *testing.T) {
	naive := func(b []byte, i int) int {
		for i < len(b) && !structural[b[i]] {
			i++
		}
		return i
	}
	for _, c := range []byte{'"', '[', ']', '{', '}', 0x02, 0x5b, 0x7b, ',', '1', 0xff} {
		for n := range 40 {
			for at := range n + 1 {
				b := bytes.Repeat([]byte{'7'}, n)
				if at < n {
					b[at] = c
				}
				for from := range min(n, 10) + 1 {
					if got, want := skipPlain(b, from), naive(b, from); got != want {
						t.Fatalf("%q from %d: %d, want %d", b, from, got, want)
					}
				}
			}
		}
	}
}
