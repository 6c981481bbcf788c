//go:build !noworker

package main

// The JSON work of one call, by JSON implementation: the library's own JSON
// serializer (its struct plans and []byte fast path, falling back to
// encoding/json) against encoding/json alone, github.com/goccy/go-json and
// github.com/segmentio/encoding/json, each used the way the serializer would
// use it (no HTML escaping, characters outside ASCII escaped afterwards,
// output appended to a reused buffer). No sockets, no processes: only the
// encoding and decoding that a call costs.
//
//	go test -run '^$' -bench JSONCall -benchmem -count 10 | tee jsoncmp.out
//	benchstat -col /impl jsoncmp.out
//
// One op is one call's JSON work: for a small call, the host encodes the
// request, the worker decodes it, encodes the reply, the host decodes it
// (2 encodes + 2 decodes); for the 1 MiB echo, a 1 MiB []byte (base64 in
// JSON) is encoded and decoded each way. encoding/json/v2 is left out: in
// go1.26 it still needs GOEXPERIMENT=jsonv2.

import (
	"bytes"
	stdjson "encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	goccy "github.com/goccy/go-json"
	segjson "github.com/segmentio/encoding/json"

	"github.com/isolated-workers/worker"
)

// libJSON is the library's JSON serializer, used through its public API only.
var libJSON worker.Serializer = worker.JSON

// jsonImpl is one JSON implementation, with the Serializer's payload methods.
type jsonImpl struct {
	name   string
	append func(dst []byte, v any) ([]byte, error)
	decode func(data []byte, v any) error
}

var jsonImpls = []jsonImpl{
	{"lib", libJSON.AppendPayload, libJSON.DecodePayload},
	{"std", appendStd, stdjson.Unmarshal},
	{"goccy", appendGoccy, goccy.Unmarshal},
	{"segmentio", appendSegmentio, segjson.Unmarshal},
}

// appendStd is what the library's serializer does without its fast paths:
// a pooled json.Encoder that does not escape HTML.
type stdEncoder struct {
	buf bytes.Buffer
	enc *stdjson.Encoder
}

var stdEncoders = sync.Pool{New: func() any {
	e := &stdEncoder{}
	e.enc = stdjson.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

func appendStd(dst []byte, v any) ([]byte, error) {
	e := stdEncoders.Get().(*stdEncoder)
	defer stdEncoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return dst, err
	}
	return appendASCII(dst, bytes.TrimSuffix(e.buf.Bytes(), []byte{'\n'})), nil
}

var goccyOpts = []goccy.EncodeOptionFunc{goccy.DisableHTMLEscape()}

func appendGoccy(dst []byte, v any) ([]byte, error) {
	js, err := goccy.MarshalWithOption(v, goccyOpts...)
	if err != nil {
		return dst, err
	}
	return appendASCII(dst, js), nil
}

func appendSegmentio(dst []byte, v any) ([]byte, error) {
	start := len(dst)
	out, err := segjson.Append(dst, v, 0) // 0: no HTML escaping, map keys unsorted
	if err != nil {
		return dst, err
	}
	if isASCII(out[start:]) {
		return out, nil
	}
	js := bytes.Clone(out[start:])
	return appendASCII(out[:start], js), nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// appendASCII appends js with every character outside ASCII written as
// \uXXXX (a surrogate pair above U+FFFF), as the library's serializer does.
// Such characters only occur inside JSON strings.
func appendASCII(dst, js []byte) []byte {
	if isASCII(js) {
		return append(dst, js...)
	}
	const hex = "0123456789abcdef"
	u := func(dst []byte, r rune) []byte {
		return append(dst, '\\', 'u', hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15])
	}
	for len(js) > 0 {
		r, n := utf8.DecodeRune(js)
		switch {
		case r < utf8.RuneSelf:
			dst = append(dst, byte(r))
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			dst = u(u(dst, r1), r2)
		default:
			dst = u(dst, r)
		}
		js = js[n:]
	}
	return dst
}

// Payloads of small calls: PingReq/PingRes of the peer comparison; a
// request and reply with a few integers, booleans and strings; and one the
// library's struct plans do not take (a slice of floats), which goes
// through its encoding/json fallback.
type (
	jobReq struct {
		ID      int64  `json:"id"`
		Name    string `json:"name"`
		Retries int    `json:"retries"`
		Force   bool   `json:"force"`
	}
	jobRes struct {
		ID     int64  `json:"id"`
		Status string `json:"status"`
		TookMs int64  `json:"tookMs"`
		OK     bool   `json:"ok"`
		Error  string `json:"error,omitempty"`
	}
	statsReq struct {
		Name   string    `json:"name"`
		Values []float64 `json:"values"`
	}
	statsRes struct {
		N    int     `json:"n"`
		Mean float64 `json:"mean"`
	}
)

var (
	pingIn  = PingReq{Message: pingMessage}
	jobIn   = jobReq{ID: 1234567, Name: "resize-thumbnail", Retries: 3, Force: true}
	statsIn = statsReq{Name: "latency", Values: []float64{1.5, 2.25, 3, 4.125, 5, 6.5, 7.75, 8}}
	bigIn   = func() []byte {
		r := rand.New(rand.NewPCG(1, 2))
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}()
)

// jsonCall is one call's JSON work with impl; it returns the host's result.
type jsonCall struct {
	name string
	run  func(impl jsonImpl, st *callState) error
}

// callState holds what a connection reuses from call to call: the buffers
// that requests and replies are encoded into.
type callState struct{ req, res []byte }

var jsonCalls = []jsonCall{
	{"ping", func(impl jsonImpl, st *callState) error {
		in := pingIn
		var req PingReq
		var res PingRes
		return roundTrip(impl, st, &in, &req, func() any { r := PingRes(req); return &r }, &res,
			func() bool { return res == PingRes(pingIn) })
	}},
	{"job", func(impl jsonImpl, st *callState) error {
		in := jobIn
		var req jobReq
		var res jobRes
		return roundTrip(impl, st, &in, &req, func() any {
			return &jobRes{ID: req.ID, Status: "done:" + req.Name, TookMs: 42, OK: req.Force}
		}, &res, func() bool { return res.ID == jobIn.ID && res.Status == "done:"+jobIn.Name && res.OK })
	}},
	{"stats", func(impl jsonImpl, st *callState) error {
		in := statsIn
		var req statsReq
		var res statsRes
		return roundTrip(impl, st, &in, &req, func() any {
			r := statsRes{N: len(req.Values)}
			for _, v := range req.Values {
				r.Mean += v / float64(len(req.Values))
			}
			return &r
		}, &res, func() bool { return res.N == len(statsIn.Values) })
	}},
	{"1MiB", func(impl jsonImpl, st *callState) error {
		in := bigIn
		var req, res []byte
		return roundTrip(impl, st, &in, &req, func() any { return &req }, &res,
			func() bool { return len(res) == len(bigIn) })
	}},
}

// roundTrip: the host encodes in, the worker decodes it into req, encodes
// reply(), the host decodes it into res, and ok checks res.
func roundTrip(impl jsonImpl, st *callState, in, req any, reply func() any, res any, ok func() bool) error {
	var err error
	if st.req, err = impl.append(st.req[:0], in); err != nil {
		return err
	}
	if err = impl.decode(st.req, req); err != nil {
		return err
	}
	if st.res, err = impl.append(st.res[:0], reply()); err != nil {
		return err
	}
	if err = impl.decode(st.res, res); err != nil {
		return err
	}
	if !ok() {
		return fmt.Errorf("%s: wrong result", impl.name)
	}
	return nil
}

// BenchmarkJSONCall: sub-benchmarks payload=…/impl=…, the implementations
// interleaved within each -count repetition.
func BenchmarkJSONCall(b *testing.B) {
	for _, c := range jsonCalls {
		for _, impl := range jsonImpls {
			b.Run("payload="+c.name+"/impl="+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				var st callState
				for b.Loop() {
					if err := c.run(impl, &st); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestJSONImpls checks that every implementation writes what the library
// writes, byte for byte, and reads it back.
func TestJSONImpls(t *testing.T) {
	values := []any{&pingIn, &jobIn, &statsIn, &statsRes{N: 3, Mean: 0.1}, &jobRes{ID: -1, Status: "é ☃ 😀 <&>"}, &bigIn, &[]byte{}}
	for _, v := range values {
		want, err := libJSON.AppendPayload(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		for _, impl := range jsonImpls {
			got, err := impl.append([]byte("x"), v)
			if err != nil || !bytes.Equal(got[1:], want) || got[0] != 'x' {
				t.Errorf("%s: %T: %.80q, %v; want %.80q", impl.name, v, got, err, want)
			}
			back := reflect.New(reflect.TypeOf(v).Elem())
			if err := impl.decode(want, back.Interface()); err != nil || !reflect.DeepEqual(back.Interface(), v) {
				t.Errorf("%s: decoding %.80q: %v", impl.name, want, err)
			}
		}
	}
	for _, c := range jsonCalls {
		for _, impl := range jsonImpls {
			var st callState
			if err := c.run(impl, &st); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
	}
}
