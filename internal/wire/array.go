package wire

import (
	"errors"
	"fmt"
)

// The payload of a batch of stream items is an array of the items, in
// the serializer's own encoding: EachJSON and EachCBOR walk one without
// decoding its elements, so that each element can be decoded by itself
// into the item's type (with the serializer's fast paths) and its size
// counted for flow control.

// EachJSON calls f with each element of the JSON array b, as it is in b,
// until f returns false. The elements are only delimited here, not
// validated: their decoder does that.
func EachJSON(b []byte, f func(elem []byte) bool) error {
	p := parser{b: b}
	p.ws()
	if !p.eat('[') {
		return p.fail("expected an array")
	}
	p.ws()
	if p.eat(']') {
		return p.end()
	}
	for {
		p.ws()
		v, err := p.elem()
		if err != nil {
			return err
		}
		if !f(v) {
			return nil
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat(']') {
			return p.end()
		}
		return p.fail("expected ',' or ']'")
	}
}

// elem delimits the array element at p.i: a number at once, anything
// else with value.
func (p *parser) elem() ([]byte, error) {
	b, start := p.b, p.i
	i := start
	for i < len(b) && numberByte[b[i]] {
		i++
	}
	if i > start && i < len(b) && !valueByte[b[i]] {
		p.i = i
		return b[start:i], nil
	}
	return p.value()
}

// numberByte marks the bytes of a JSON number; valueByte those that may
// continue a value after them (a number followed by one is not a number).
var numberByte, valueByte [256]bool

func init() {
	for _, c := range []byte("0123456789-+.eE") {
		numberByte[c] = true
	}
	for c := range 256 {
		valueByte[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '"' || c == '{' || c == '['
	}
}

// EachCBOR calls f with each element of the CBOR array b (of definite or
// indefinite length), as it is in b, until f returns false. Each element
// is checked to be well formed (RFC 8949 §5.3.1), not decoded.
func EachCBOR(b []byte, f func(elem []byte) bool) error {
	if len(b) == 0 || b[0]>>5 != 4 {
		return errors.New("invalid CBOR: expected an array")
	}
	n, i, err := cborHead(b, 0)
	if err != nil {
		return err
	}
	for k := int64(0); n < 0 || k < n; k++ {
		if n < 0 && i < len(b) && b[i] == 0xff {
			i++
			break
		}
		end, err := cborScalarEnd(b, i)
		if end < 0 {
			end, err = cborEnd(b, i)
		}
		if err != nil {
			return err
		}
		if !f(b[i:end]) {
			return nil
		}
		i = end
	}
	if i != len(b) {
		return fmt.Errorf("invalid CBOR: %d bytes after the array", len(b)-i)
	}
	return nil
}

var errCBORShort = errors.New("invalid CBOR: the data ends inside an item")

// cborHead reads the head at b[i:]: it returns its argument (-1 for an
// indefinite length) and where what follows the head starts. The
// argument of a float or simple value (major type 7) is its value: the
// head covers it.
func cborHead(b []byte, i int) (arg int64, next int, err error) {
	if i >= len(b) {
		return 0, 0, errCBORShort
	}
	mt, ai := b[i]>>5, b[i]&0x1f
	switch {
	case ai < 24:
		return int64(ai), i + 1, nil
	case ai <= 27:
		w := 1 << (ai - 24)
		if len(b)-i-1 < w {
			return 0, 0, errCBORShort
		}
		var n uint64
		for _, c := range b[i+1 : i+1+w] {
			n = n<<8 | uint64(c)
		}
		if mt == 7 && ai == 24 && n < 32 {
			return 0, 0, fmt.Errorf("invalid CBOR: simple value %d in two bytes at byte %d", n, i)
		}
		if mt >= 2 && mt <= 5 && n > uint64(len(b)) {
			return 0, 0, errCBORShort // more than the data could hold
		}
		return int64(n), i + 1 + w, nil
	case ai == 31 && mt >= 2 && mt <= 5:
		return -1, i + 1, nil
	}
	return 0, 0, fmt.Errorf("invalid CBOR: head 0x%02x at byte %d", b[i], i)
}

// cborScalarEnd returns the end of the item at b[i:] when it is an
// integer, a definite string or a simple value or float (the common
// items), or -1 for cborEnd to find.
func cborScalarEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errCBORShort
	}
	switch mt := b[i] >> 5; {
	case mt == 0 || mt == 1 || mt == 7 && b[i] != 0xff:
		_, next, err := cborHead(b, i)
		return next, err
	case (mt == 2 || mt == 3) && b[i]&0x1f != 31:
		n, next, err := cborHead(b, i)
		if err == nil && int64(len(b)-next) < n {
			err = errCBORShort
		}
		return next + int(n), err
	}
	return -1, nil
}

// cborLevel is an open container in cborEnd.
type cborLevel struct {
	left  int64 // items still due; -1: until a break
	chunk byte  // an indefinite string's: the major type of its chunks + 1
	pairs bool  // an indefinite map: items come in pairs
	odd   bool  // an indefinite map: a key without its value so far
}

// cborEnd returns the end of the well-formed CBOR data item at b[i:],
// without recursion.
func cborEnd(b []byte, i int) (int, error) {
	levels := []cborLevel{{left: 1}}
	for len(levels) > 0 {
		top := &levels[len(levels)-1]
		if top.left == 0 {
			levels = levels[:len(levels)-1]
			continue
		}
		if i < len(b) && b[i] == 0xff {
			if top.left >= 0 || top.odd {
				return 0, fmt.Errorf("invalid CBOR: break at byte %d outside an indefinite item or after a key", i)
			}
			levels, i = levels[:len(levels)-1], i+1
			continue
		}
		if top.left > 0 {
			top.left--
		}
		top.odd = top.pairs && !top.odd
		if top.chunk != 0 && i < len(b) && (b[i]>>5 != top.chunk-1 || b[i]&0x1f == 31) {
			return 0, fmt.Errorf("invalid CBOR: a chunk of an indefinite string at byte %d is not a definite string of its type", i)
		}
		n, next, err := cborHead(b, i)
		if err != nil {
			return 0, err
		}
		mt := b[i] >> 5
		i = next
		switch {
		case (mt == 2 || mt == 3) && n < 0:
			levels = append(levels, cborLevel{left: -1, chunk: mt + 1})
		case mt == 2 || mt == 3:
			if i += int(n); i > len(b) {
				return 0, errCBORShort
			}
		case mt == 4:
			levels = append(levels, cborLevel{left: n})
		case mt == 5:
			levels = append(levels, cborLevel{left: max(2*n, -1), pairs: n < 0})
		case mt == 6:
			levels = append(levels, cborLevel{left: 1})
		}
	}
	return i, nil
}
