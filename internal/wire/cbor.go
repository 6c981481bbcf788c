package wire

// AppendCBORHead appends a CBOR head (RFC 8949) of major type mt with
// argument n: for a byte string (major type 2) of n bytes, what precedes
// them.
func AppendCBORHead(dst []byte, mt byte, n uint64) []byte {
	mt <<= 5
	switch {
	case n < 24:
		return append(dst, mt|byte(n))
	case n <= 0xff:
		return append(dst, mt|24, byte(n))
	case n <= 0xffff:
		return append(dst, mt|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(dst, mt|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, mt|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// CBORByteString returns the content of data if data is exactly one
// definite-length, non-empty CBOR byte string.
func CBORByteString(data []byte) ([]byte, bool) {
	if len(data) == 0 || data[0]>>5 != 2 {
		return nil, false
	}
	var n uint64
	h := 1
	switch ai := data[0] & 0x1f; {
	case ai < 24:
		n = uint64(ai)
	case ai <= 27:
		w := 1 << (ai - 24)
		if len(data) < 1+w {
			return nil, false
		}
		for _, c := range data[1 : 1+w] {
			n = n<<8 | uint64(c)
		}
		h += w
	default:
		return nil, false // indefinite length, or reserved
	}
	if n == 0 || n != uint64(len(data)-h) {
		return nil, false
	}
	return data[h:len(data):len(data)], true
}

// CBORHeadOf splits data into its first head, major type mt and argument
// n, and what follows it; ok is false for an indefinite length, a
// reserved head or data too short.
func CBORHeadOf(data []byte) (mt byte, n uint64, rest []byte, ok bool) {
	if len(data) == 0 {
		return 0, 0, nil, false
	}
	mt, ai := data[0]>>5, data[0]&0x1f
	switch {
	case ai < 24:
		return mt, uint64(ai), data[1:], true
	case ai <= 27:
		w := 1 << (ai - 24)
		if len(data) < 1+w {
			return 0, 0, nil, false
		}
		for _, c := range data[1 : 1+w] {
			n = n<<8 | uint64(c)
		}
		return mt, n, data[1+w:], true
	}
	return 0, 0, nil, false
}
