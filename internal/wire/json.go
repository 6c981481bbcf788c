package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Envelope is one message of the JSON protocol, with its payload left
// encoded. Type and Tx may alias the frame they were parsed from.
type Envelope struct {
	Type     []byte
	Tx       []byte
	Payload  []byte // a raw JSON value; nil when the message has no payload key
	Deadline int64  // Unix milliseconds; 0 when absent (an extension of ours)
}

// AppendJSON appends the JSON encoding of e, with the keys in the order
// type, tx, payload, deadline. The payload must already be valid JSON with
// only ASCII characters (see AppendASCII).
func AppendJSON(dst []byte, typ, tx string, payload []byte, deadline int64) []byte {
	dst = append(dst, `{"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"tx":`...)
	dst = AppendString(dst, tx)
	if payload != nil {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, payload...)
	}
	if deadline != 0 {
		dst = append(dst, `,"deadline":`...)
		dst = strconv.AppendInt(dst, deadline, 10)
	}
	return append(dst, '}')
}

// ParseJSON parses one frame of the JSON protocol. Unknown keys are skipped;
// the payload is only delimited here, not validated.
func ParseJSON(frame []byte, e *Envelope) error {
	*e = Envelope{}
	p := parser{b: frame}
	p.ws()
	if !p.eat('{') {
		return p.fail("a message must be a JSON object")
	}
	p.ws()
	if p.eat('}') {
		return p.end()
	}
	for {
		p.ws()
		key, err := p.str()
		if err != nil {
			return err
		}
		p.ws()
		if !p.eat(':') {
			return p.fail("expected ':'")
		}
		p.ws()
		if err := p.field(string(key), e); err != nil {
			return err
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return p.end()
		}
		return p.fail("expected ',' or '}'")
	}
}

type parser struct {
	b []byte
	i int
}

func (p *parser) fail(what string) error {
	return fmt.Errorf("invalid JSON message at byte %d: %s", p.i, what)
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) end() error {
	p.ws()
	if p.i != len(p.b) {
		return p.fail("data after the message")
	}
	return nil
}

func (p *parser) field(key string, e *Envelope) error {
	var err error
	switch key {
	case "type":
		// An empty type is left to the receiver, as a missing one is: a
		// worker answers it with an error reply when the tx is known.
		e.Type, err = p.str()
		e.Type = validUTF8(e.Type)
	case "tx":
		e.Tx, err = p.str()
		e.Tx = validUTF8(e.Tx)
	case "payload":
		e.Payload, err = p.value()
	case "deadline":
		var v []byte
		if v, err = p.value(); err == nil {
			var ok bool
			if e.Deadline, ok = parseInt64(v); !ok {
				err = p.fail(`"deadline" must be an integer`)
			}
		}
	default:
		_, err = p.value()
	}
	return err
}

// str parses a JSON string and returns its contents, unescaped.
func (p *parser) str() ([]byte, error) {
	if !p.eat('"') {
		return nil, p.fail("expected a string")
	}
	start, escaped := p.i, false
	for p.i < len(p.b) {
		// Skip to the next byte that matters, eight bytes at a time: a
		// long payload string (base64 of bytes) is most of a big frame.
		if p.i+8 <= len(p.b) {
			m := special8(binary.LittleEndian.Uint64(p.b[p.i:]))
			if m == 0 {
				p.i += 8
				continue
			}
			p.i += bits.TrailingZeros64(m) >> 3
		}
		switch c := p.b[p.i]; {
		case c == '"':
			p.i++
			s := p.b[start : p.i-1]
			if !escaped {
				return s, nil
			}
			var out string
			if err := json.Unmarshal(p.b[start-1:p.i], &out); err != nil {
				return nil, p.fail("bad string escape")
			}
			return []byte(out), nil
		case c == '\\':
			escaped = true
			p.i += 2
		case c < 0x20:
			return nil, p.fail("control character in string")
		default:
			p.i++
		}
	}
	return nil, p.fail("unterminated string")
}

// special8 marks the bytes of x (little-endian) that str must look at: a
// quote, a backslash or a control character. The lowest marked byte is
// exactly the first such byte (marks above it may be spurious).
func special8(x uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q, b := x^(lo*'"'), x^(lo*'\\')
	return ((x-lo*0x20)&^x | (q-lo)&^q | (b-lo)&^b) & hi
}

// validUTF8 replaces each byte of an invalid UTF-8 sequence with U+FFFD,
// as encoding/json does for escaped strings and AppendString on the way
// out: a reply then carries exactly the tx that its request was read with.
// parseInt64 is strconv.ParseInt(string(b), 10, 64) without the
// allocation of the string (which its error would keep).
func parseInt64(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg, b = b[0] == '-', b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' || n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if neg && n <= 1<<63 {
		return -int64(n), true
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		out = utf8.AppendRune(out, r)
		b = b[n:]
	}
	return out
}

// value delimits one JSON value without recursion, so that deep nesting in
// hostile input costs no stack. Brackets are only counted; the payload's
// decoder validates it later.
func (p *parser) value() ([]byte, error) {
	start, depth := p.i, 0
	for p.i < len(p.b) {
		if depth > 0 {
			// Inside an object or array, only strings and brackets count.
			if p.i = skipPlain(p.b, p.i); p.i == len(p.b) {
				break
			}
		}
		c := p.b[p.i]
		switch c {
		case '"':
			if _, err := p.str(); err != nil {
				return nil, err
			}
			if depth == 0 {
				return p.b[start:p.i], nil
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return p.scalar(start)
			}
			depth--
			if depth == 0 {
				p.i++
				return p.b[start:p.i], nil
			}
		case ',', ' ', '\t', '\r', '\n', ':':
			if depth == 0 {
				return p.scalar(start)
			}
		}
		p.i++
	}
	if depth > 0 {
		return nil, p.fail("unterminated value")
	}
	return p.scalar(start)
}

// skipPlain returns the index of the first byte from b[i:] that value
// must look at inside a container (a quote or a bracket, see structural),
// or len(b): eight bytes at a time, then one by one. Setting bit 5 of each
// byte maps '[' and ']' onto '{' and '}', so three byte values are
// searched for; a byte that only maps onto one of them (a control
// character, invalid there anyway) stops the search early, harmlessly.
func skipPlain(b []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:]) | 0x2020202020202020
		q, l, r := x^(ones*'"'), x^(ones*'{'), x^(ones*'}')
		if (q-ones)&^q&highs|(l-ones)&^l&highs|(r-ones)&^r&highs != 0 {
			break
		}
	}
	for i < len(b) && !structural[b[i]] {
		i++
	}
	return i
}

// structural marks the bytes that value must look at inside a container.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

func (p *parser) scalar(start int) ([]byte, error) {
	if p.i == start {
		return nil, p.fail("expected a value")
	}
	return p.b[start:p.i], nil
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string. Every character outside printable
// ASCII is escaped as \uXXXX, so that a receiver that decodes chunks of the
// stream separately (as the TypeScript peer does) never sees a split
// multi-byte character. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			// Copy the run of plain characters in one go.
			j := i + 1
			for j < len(s) && s[j] >= 0x20 && s[j] < utf8.RuneSelf && s[j] != '"' && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
			i++
			continue
		case '\n':
			dst = append(dst, '\\', 'n')
			i++
			continue
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		dst = appendRuneEscape(dst, r)
		i += size
	}
	return append(dst, '"')
}

func appendRuneEscape(dst []byte, r rune) []byte {
	if r >= 0x10000 {
		r1, r2 := utf16.EncodeRune(r)
		dst = appendU(dst, r1)
		return appendU(dst, r2)
	}
	return appendU(dst, r)
}

func appendU(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}

// IsASCII reports whether b holds only 7-bit bytes.
func IsASCII(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// AppendASCII appends the JSON text js with every non-ASCII character
// escaped as \uXXXX. In valid JSON such characters only occur inside
// strings, where the escape means the same character.
func AppendASCII(dst, js []byte) []byte {
	for len(js) > 0 {
		i := 0
		for i < len(js) && js[i] < utf8.RuneSelf {
			i++
		}
		dst = append(dst, js[:i]...)
		js = js[i:]
		if len(js) == 0 {
			break
		}
		r, size := utf8.DecodeRune(js)
		dst = appendRuneEscape(dst, r)
		js = js[size:]
	}
	return dst
}

// ErrNotObject is returned by callers that need a JSON object payload.
var ErrNotObject = errors.New("payload is not a JSON object")
