package wire

import (
	"encoding/binary"
	"errors"
)

// The binary envelope: a flags byte, the type and the tx as uvarint-length
// prefixed strings, the deadline as a varint when flagged, and the payload
// as the rest of the frame when flagged.
const (
	flagPayload  = 1 << 0
	flagDeadline = 1 << 1
)

var errBinary = errors.New("invalid binary envelope")

// AppendBinary appends the binary envelope of a message.
func AppendBinary(dst []byte, typ, tx string, payload []byte, deadline int64) []byte {
	return append(appendBinaryHead(dst, payload != nil, typ, tx, deadline), payload...)
}

// appendBinaryHead appends everything of the envelope before the payload.
func appendBinaryHead(dst []byte, hasPayload bool, typ, tx string, deadline int64) []byte {
	var flags byte
	if hasPayload {
		flags |= flagPayload
	}
	if deadline != 0 {
		flags |= flagDeadline
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(typ)))
	dst = append(dst, typ...)
	dst = binary.AppendUvarint(dst, uint64(len(tx)))
	dst = append(dst, tx...)
	if deadline != 0 {
		dst = binary.AppendVarint(dst, deadline)
	}
	return dst
}

// ParseBinary parses a binary envelope; the fields alias frame.
func ParseBinary(frame []byte, e *Envelope) error {
	*e = Envelope{}
	if len(frame) == 0 || frame[0]&^(flagPayload|flagDeadline) != 0 {
		return errBinary
	}
	flags, rest := frame[0], frame[1:]
	var ok bool
	if e.Type, rest, ok = str(rest); !ok {
		return errBinary
	}
	if e.Tx, rest, ok = str(rest); !ok {
		return errBinary
	}
	if flags&flagDeadline != 0 {
		d, n := binary.Varint(rest)
		if n <= 0 {
			return errBinary
		}
		e.Deadline, rest = d, rest[n:]
	}
	if flags&flagPayload != 0 {
		e.Payload = rest[:len(rest):len(rest)]
		if e.Payload == nil {
			e.Payload = []byte{}
		}
	} else if len(rest) != 0 {
		return errBinary
	}
	return nil
}

func str(b []byte) (s, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}
