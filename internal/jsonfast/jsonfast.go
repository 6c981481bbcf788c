// Package jsonfast encodes and decodes the JSON payloads of the library's
// default serializer: exactly what encoding/json produces and accepts, with
// characters outside ASCII escaped (a TypeScript receiver decodes UTF-8 per
// chunk and could split one), but without encoding/json's per-call
// allocations and, for byte slices, its generic scanning of a long base64
// string. The plain payloads most messages carry (a pointer to a struct of
// strings, bools and integers) go through a plan made once per type, with
// no reflection per call; anything else goes to encoding/json.
//
// # Why it is hand-written
//
// Measured in one run (bench/jsoncmp_test.go, BenchmarkJSONCall: the JSON
// work of one call, two encodes and two decodes; 2 vCPU, go1.26.8), against
// encoding/json, github.com/goccy/go-json v0.12.0 and
// github.com/segmentio/encoding v0.5.4:
//
//	payload          this package    encoding/json   goccy           segmentio
//	small struct     0.92 µs, 6 al.  2.81 µs, 14     0.84 µs, 8      2.00 µs, 6
//	5-field struct   1.54 µs, 7      5.36 µs, 15     1.87 µs, 9      2.83 µs, 7
//	1 MiB []byte     6.81 ms, 5      29.5 ms, 11     9.72 ms, 15     2.95 ms, 5
//
// End to end, with the serializer switched (a throwaway build), calls in
// process cost 20-67 % more with encoding/json, and a 1 MiB echo 3-4 times
// as much; over a worker process the small-call difference (2-3 µs of a
// ~20 µs call) is within this machine's noise, the 1 MiB one is not. The
// base64 path (40 lines, no reflection) is what keeps 1 MiB near Binary's
// league; the plans keep a call within the allocation budget
// (TestAllocsPerCall: 6 allocations with them, 14 without). goccy matches
// the plans on small structs but is slower on bytes and adds allocations
// (and its own unsafe code); segmentio is twice as fast on 1 MiB only,
// through an assembly dependency. Neither earns a place in the core
// module; the fuzz targets here check that the output stays exactly
// encoding/json's.
package jsonfast

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"sync"

	"github.com/isolated-workers/worker/internal/wire"
)

// appendJSONBytes appends what encoding/json makes of a []byte: a base64
// string, or null for a nil slice.
func appendJSONBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// decodeJSONBytes decodes a JSON string of base64 into *v as encoding/json
// does. It reports false, leaving *v alone, when data is anything else (an
// escape, white space, null, a syntax or base64 error): encoding/json then
// decides, with its own errors.
func decodeJSONBytes(data []byte, v *[]byte) bool {
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return false
	}
	s := data[1 : len(data)-1]
	if len(s)%4 != 0 {
		return false
	}
	// A quote, a backslash or any byte that is not base64 fails the
	// decoding. CR and LF, which a JSON string cannot hold raw, are skipped
	// by the decoder: then fewer bytes come out than the length promises.
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, s)
	want := len(s) / 4 * 3
	if len(s) > 0 && s[len(s)-1] == '=' {
		want--
		if s[len(s)-2] == '=' {
			want--
		}
	}
	if err != nil || n != want {
		return false
	}
	*v = b[:n]
	return true
}

// maxPooledDecode is the largest payload decoded with a pooled
// json.Decoder; larger ones go to json.Unmarshal, which does not copy them.
const maxPooledDecode = 16 << 10

// jsonDecoder is a json.Decoder that is reused from payload to payload: it
// keeps the decoder state that json.Unmarshal allocates on every call.
type jsonDecoder struct {
	src bytesSource
	dec *json.Decoder
}

// bytesSource is the reader of a jsonDecoder: the payload being decoded.
type bytesSource struct{ b []byte }

func (s *bytesSource) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

var jsonDecoders = sync.Pool{New: func() any {
	d := &jsonDecoder{}
	d.dec = json.NewDecoder(&d.src)
	return d
}}

// Decode is json.Unmarshal(data, v), allocating only what v needs.
func Decode(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok && b != nil && decodeJSONBytes(data, b) {
		return nil
	}
	if pl, p := planned(v); pl != nil && pl.decode(data, p) {
		return nil
	}
	if len(data) > maxPooledDecode {
		return json.Unmarshal(data, v)
	}
	d := jsonDecoders.Get().(*jsonDecoder)
	d.src.b = data
	start := d.dec.InputOffset()
	err := d.dec.Decode(v)
	// The decoder stops at the end of the first value: it must be the end
	// of data, as json.Unmarshal requires. Anything else (trailing white
	// space included) and any error go to json.Unmarshal, which decodes v
	// again and reports exactly what it would have; the decoder, whose
	// state is then unknown, is dropped.
	if err != nil || d.dec.InputOffset()-start != int64(len(data)) || len(d.src.b) != 0 {
		d.src.b = nil
		return json.Unmarshal(data, v)
	}
	d.src.b = nil
	jsonDecoders.Put(d)
	return nil
}

type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// maxPooled bounds the buffers kept for reuse, so that one huge message does
// not pin its memory for the life of the process.
const maxPooled = 4 << 20

// Append appends the encoding/json encoding of v to dst, with HTML left
// alone and characters outside ASCII escaped.
func Append(dst []byte, v any) ([]byte, error) {
	switch b := v.(type) {
	case *[]byte:
		if b == nil {
			return append(dst, "null"...), nil
		}
		return appendJSONBytes(dst, *b), nil
	case []byte:
		return appendJSONBytes(dst, b), nil
	}
	if pl, p := planned(v); pl != nil {
		if out, ok := pl.encode(dst, p); ok {
			return out, nil
		}
	}
	e := encoders.Get().(*encoder)
	e.buf.Reset()
	err := e.enc.Encode(v)
	if err == nil {
		js := bytes.TrimSuffix(e.buf.Bytes(), []byte{'\n'})
		if wire.IsASCII(js) {
			dst = append(dst, js...)
		} else {
			dst = wire.AppendASCII(dst, js)
		}
	}
	if e.buf.Cap() <= maxPooled {
		encoders.Put(e)
	}
	return dst, err
}
