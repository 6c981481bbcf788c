package worker

import (
	"bytes"
	"fmt"
	"testing"
)

// ownedBinary decodes exactly as Binary does, only without a copy.
func TestOwnedBinaryDecode(t *testing.T) {
	var inputs [][]byte
	for _, n := range []int{0, 1, 23, 24, 255, 256, 65535, 65536, 70000} {
		b := bytes.Repeat([]byte{7}, n)
		enc, _ := Binary.AppendPayload(nil, &b)
		inputs = append(inputs, enc, enc[:len(enc)-min(1, len(enc))], append(enc, 0))
	}
	inputs = append(inputs, []byte{0x5f, 0x41, 1, 0xff}, []byte{0x59, 0, 2, 1, 2}, []byte{0xf6}, []byte{0x41}, nil,
		[]byte{0x5c, 1}, []byte{0x42, 1, 2}, []byte{0x62, 'a', 'b'})
	for _, in := range inputs {
		var want, got []byte
		werr := Binary.DecodePayload(in, &want)
		gerr := ownedBinary{}.DecodePayload(in, &got)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) || !bytes.Equal(want, got) || (want == nil) != (got == nil) {
			t.Errorf("% x: got %v, %v; want %v, %v", in[:min(len(in), 8)], len(got), gerr, len(want), werr)
		}
	}
	var s string
	if err := (ownedBinary{}).DecodePayload([]byte{0x62, 'a', 'b'}, &s); err != nil || s != "ab" {
		t.Errorf("a string: %q, %v", s, err)
	}
}
