package jsonfast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"

	"github.com/isolated-workers/worker/internal/wire"
)

// The JSON fast paths must give exactly what encoding/json gives.
func TestJSONFastPathsMatchEncodingJSON(t *testing.T) {
	type S struct {
		A string         `json:"a"`
		B []int          `json:"b"`
		M map[string]any `json:"m"`
	}
	inputs := []string{
		`{"a":"x","b":[1,2],"m":{"k":1}}`, ` {"a":"x"} `, `{"a":1}`, `{"a":"x"} {}`, `{"a":"x"`, ``, `null`,
		`"aGVsbG8="`, `""`, `"aGVsbG8"`, `"aGV\u0073bG8="`, `"aGVs\nbG8="`, `"a+/="`, `"!!!!"`, `12`, `[1,2]`,
		"\"aGVsbA==\n\n\n\n\"", "\"\n\n\n\naGVsbA==\"", "\"aGVz\r\n\r\nbA==\"", "\"aGVsbG8=\n\"", `"aGVsbA=="`, `"aGVsbA="`, `"=AAA"`,
		`"x"`, `true`, `{"b":[1,"x",3]}`, `{"m":{"k":[{}]}}`, `"\u00e9"`,
	}
	targets := []func() any{
		func() any { return new(S) }, func() any { return new([]byte) }, func() any { return new(any) },
		func() any { return new(string) }, func() any { return new(int) }, func() any { return new(map[string]any) },
		func() any { b := []byte("old"); return &b },
	}
	for _, in := range inputs {
		for i, mk := range targets {
			want, got := mk(), mk()
			werr := json.Unmarshal([]byte(in), want)
			gerr := Decode([]byte(in), got)
			if fmt.Sprint(werr) != fmt.Sprint(gerr) || (werr == nil && !reflect.DeepEqual(want, got)) {
				t.Errorf("%q into target %d: got %#v, %v; want %#v, %v", in, i, got, gerr, want, werr)
			}
		}
	}
	// Decoders are reused: decode many values in a row.
	for i := range 100 {
		var s S
		if err := Decode([]byte(fmt.Sprintf(`{"a":"%d"}`, i)), &s); err != nil || s.A != fmt.Sprint(i) {
			t.Fatalf("%d: %v %q", i, err, s.A)
		}
	}
	for _, b := range [][]byte{nil, {}, []byte("hello"), make([]byte, 1000)} {
		want, _ := json.Marshal(b)
		got, err := Append(nil, &b)
		if err != nil || string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", b, got, want)
		}
		if got, _ = Append(nil, b); string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", b, got, want)
		}
	}
	if got, _ := Append(nil, (*[]byte)(nil)); string(got) != "null" {
		t.Errorf("nil *[]byte: got %s", got)
	}
}

// Types for the planned fast path (and some it must refuse).
type (
	planA struct {
		Message string `json:"message"`
	}
	planB struct {
		A, B int
		C    string `json:"c,omitempty"`
		D    bool   `json:"d"`
		E    uint8
		F    int8
		G    int16 `json:"g,omitempty"`
		H    uint64
		I    int32  `json:",omitempty"`
		U    uint   `json:"u,omitempty"`
		S    string `json:"-"`
		N    planName
		p    int
	}
	planName     string
	planStringed struct {
		X int32 `json:"x,string"`
	}
	planMap struct {
		M map[string]int
	}
	planFold struct {
		A string `json:"a"`
		B string `json:"A"`
	}
	planEmpty    struct{}
	planEmbedded struct{ planA }
	planText     struct{ T planTextVal }
	planTextVal  int
)

func (v planTextVal) MarshalText() ([]byte, error) { return []byte("t"), nil }

// oldAppendPayload is AppendPayload without the fast paths.
func oldAppendPayload(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	js := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return wire.AppendASCII(nil, js), nil
}

var planTargets = []func() any{
	func() any { return new(planA) }, func() any { return new(planB) }, func() any { return new(planStringed) },
	func() any { return new(planMap) }, func() any { return new(planFold) }, func() any { return new(planEmpty) },
	func() any { return new(planEmbedded) }, func() any { return new(planText) }, func() any { return new(string) },
	func() any { return new(int) }, func() any { return new(bool) }, func() any { return new(uint16) },
	func() any { return new(int8) }, func() any { return new(planName) },
	func() any { return &planA{Message: "old"} }, func() any { return &planB{A: 7, C: "keep", D: true, N: "n"} },
}

func checkPlanDecode(t *testing.T, in []byte) {
	for i, mk := range planTargets {
		want, got := mk(), mk()
		werr := json.Unmarshal(in, want)
		gerr := Decode(in, got)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) || (werr == nil && !reflect.DeepEqual(want, got)) {
			t.Errorf("%q into target %d (%T): got %#v, %v; want %#v, %v", in, i, want, got, gerr, want, werr)
		}
	}
}

func TestJSONPlanDecode(t *testing.T) {
	for _, in := range []string{
		`{"message":"hello"}`, `{"message":"h\u00e9"}`, `{"message":"hé"}`, "{\"message\":\"h\xff\"}", `{"message":null}`,
		`{"Message":"x"}`, `{"message":"a","message":"b"}`, `{}`, `{"message":"x",}`, `{,"message":"x"}`, `{"message":"x" }`,
		`{ "message":"x"}`, `{"message":1}`, `{"other":1}`, `{"message":"x","other":[1,2]}`, `null`, `[]`, `"s"`, `12`,
		`{"A":1,"B":-2,"c":"x","d":true,"E":255,"F":-128,"g":3,"H":18446744073709551615,"I":5,"u":6,"S":"no","N":"nn"}`,
		`{"E":256}`, `{"F":-129}`, `{"H":-1}`, `{"A":1.5}`, `{"A":1e2}`, `{"A":01}`, `{"A":-0}`, `{"A":-}`, `{"d":"true"}`,
		`{"d":tru}`, `{"A":9223372036854775808}`, `{"u":-0}`, `{"x":"5"}`, `{"x":5}`, `{"M":{"a":1}}`, `{"a":"1","A":"2"}`,
		`{"T":1}`, `"hello"`, `"h\"i"`, `true`, `false`, `-5`, `65535`, `65536`, `-128`, `-129`, `"\u2028"`, "\"\u2028\"",
		`{"message":"x"}x`, ` {"message":"x"}`, `{"message":"x"`, `{"message"}`, `{"message":}`, `{"message":"x":1}`,
	} {
		checkPlanDecode(t, []byte(in))
	}
}

func FuzzJSONPlanDecode(f *testing.F) {
	f.Add([]byte(`{"message":"hello"}`))
	f.Add([]byte(`{"A":1,"B":-2,"c":"x","d":true,"E":255}`))
	f.Add([]byte(`"s"`))
	f.Add([]byte(`-12`))
	f.Fuzz(func(t *testing.T, in []byte) { checkPlanDecode(t, in) })
}

func checkPlanEncode(t *testing.T, v any) {
	want, werr := oldAppendPayload(v)
	got, gerr := Append([]byte("x"), v)
	if fmt.Sprint(werr) != fmt.Sprint(gerr) || werr == nil && string(got) != "x"+string(want) {
		t.Errorf("%#v: got %s, %v; want x%s, %v", v, got, gerr, want, werr)
	}
}

func TestJSONPlanEncode(t *testing.T) {
	s := "hello"
	n, b, u := -42, true, uint16(7)
	for _, v := range []any{
		&planA{}, &planA{Message: "hello"}, &planA{Message: "é<>&\"\\\n\u2028\xff"}, &planB{}, (*planA)(nil),
		&planB{A: 1, B: -2, C: "c", D: true, E: 255, F: -128, G: -3, H: 1 << 63, I: -1, U: 9, S: "s", N: "n<>", p: 1},
		&planStringed{X: 5}, &planMap{M: map[string]int{"a": 1}}, &planFold{A: "a", B: "b"}, &planEmpty{},
		&planEmbedded{planA{"m"}}, &planText{T: 3}, &s, &n, &b, &u, planA{Message: "by value"},
	} {
		checkPlanEncode(t, v)
	}
}

func FuzzJSONPlanEncode(f *testing.F) {
	f.Add("hello", int64(1), true, uint64(2))
	f.Fuzz(func(t *testing.T, s string, i int64, b bool, u uint64) {
		checkPlanEncode(t, &planA{Message: s})
		checkPlanEncode(t, &planB{A: int(i), B: int(u), C: s, D: b, E: uint8(u), F: int8(i), G: int16(i), H: u,
			I: int32(i), U: uint(u), N: planName(s)})
		checkPlanEncode(t, &s)
		checkPlanEncode(t, &i)
	})
}

func TestAppendIntMatchesStrconv(t *testing.T) {
	for _, n := range []int64{0, 1, 9, 10, 11, 99, 100, 12345, -1, -9, -10, -12345, 1<<63 - 1, -1 << 63, 999999999999999999, 1000000000000000000} {
		if got, want := string(appendInt([]byte("x"), n)), "x"+strconv.FormatInt(n, 10); got != want {
			t.Errorf("appendInt(%d) = %s, want %s", n, got, want)
		}
	}
	for _, u := range []uint64{0, 9, 10, 1<<64 - 1, 10000000000000000000, 9999999999999999999} {
		if got, want := string(appendUint(nil, u)), strconv.FormatUint(u, 10); got != want {
			t.Errorf("appendUint(%d) = %s, want %s", u, got, want)
		}
	}
}

func FuzzAppendInt(f *testing.F) {
	f.Add(int64(-1234567))
	f.Fuzz(func(t *testing.T, n int64) {
		if got, want := string(appendInt(nil, n)), strconv.FormatInt(n, 10); got != want {
			t.Fatalf("appendInt(%d) = %s, want %s", n, got, want)
		}
		if got, want := string(appendUint(nil, uint64(n))), strconv.FormatUint(uint64(n), 10); got != want {
			t.Fatalf("appendUint(%d) = %s, want %s", uint64(n), got, want)
		}
	})
}
