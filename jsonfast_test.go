package worker

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
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
			gerr := decodeJSON([]byte(in), got)
			if fmt.Sprint(werr) != fmt.Sprint(gerr) || (werr == nil && !reflect.DeepEqual(want, got)) {
				t.Errorf("%q into target %d: got %#v, %v; want %#v, %v", in, i, got, gerr, want, werr)
			}
		}
	}
	// Decoders are reused: decode many values in a row.
	for i := range 100 {
		var s S
		if err := decodeJSON([]byte(fmt.Sprintf(`{"a":"%d"}`, i)), &s); err != nil || s.A != fmt.Sprint(i) {
			t.Fatalf("%d: %v %q", i, err, s.A)
		}
	}
	for _, b := range [][]byte{nil, {}, []byte("hello"), make([]byte, 1000)} {
		want, _ := json.Marshal(b)
		got, err := JSON{}.AppendPayload(nil, &b)
		if err != nil || string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", b, got, want)
		}
		if got, _ = (JSON{}).AppendPayload(nil, b); string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", b, got, want)
		}
	}
	if got, _ := (JSON{}).AppendPayload(nil, (*[]byte)(nil)); string(got) != "null" {
		t.Errorf("nil *[]byte: got %s", got)
	}
}
