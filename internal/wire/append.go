package wire

import (
	"strconv"
)

// The envelopes in two halves, for a writer that appends the payload
// between them straight from its encoder: AppendJSONHead, payload,
// AppendJSONTail gives the bytes of AppendJSON; AppendBinaryHead, payload
// gives those of AppendBinary.

// AppendJSONHead appends the JSON envelope up to its payload's value.
func AppendJSONHead(dst []byte, typ, tx string) []byte {
	dst = append(dst, `{"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"tx":`...)
	dst = AppendString(dst, tx)
	return append(dst, `,"payload":`...)
}

// AppendJSONTail appends the rest of the JSON envelope after its payload.
func AppendJSONTail(dst []byte, deadline int64) []byte {
	if deadline != 0 {
		dst = append(dst, `,"deadline":`...)
		dst = strconv.AppendInt(dst, deadline, 10)
	}
	return append(dst, '}')
}

// AppendBinaryHead appends the binary envelope of a message that has a
// payload, up to the payload, which is the rest of the frame.
func AppendBinaryHead(dst []byte, typ, tx string, deadline int64) []byte {
	return appendBinaryHead(dst, true, typ, tx, deadline)
}
