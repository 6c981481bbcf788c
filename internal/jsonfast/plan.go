package jsonfast

import (
	"encoding"
	"encoding/json"
	mbits "math/bits"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"
)

// The plan path: for a pointer to a struct whose exported fields are
// strings, bools and integers (or to one such value), encoding and decoding
// go through a plan made once per type, with no reflection per call. The
// plan only takes what it is sure to treat exactly as encoding/json does
// (see planFor and the parsers below); anything else, in a type or in a
// payload, goes to encoding/json.

// jsonPlan encodes and decodes one type of value (the pointed-to type of
// the payload).
type jsonPlan struct {
	fields []planField // a struct's fields, in encoding order; nil for a scalar
	scalar reflect.Kind
}

type planField struct {
	name      string // the JSON key
	key       string // `"name":`
	offset    uintptr
	kind      reflect.Kind
	omitEmpty bool
}

// jsonPlans caches planFor by pointer type (a nil *jsonPlan means none),
// in a map that is replaced, never changed: reading it takes no lock.
var (
	jsonPlans   atomic.Pointer[map[reflect.Type]*jsonPlan]
	jsonPlansMu sync.Mutex
)

func planOf(t reflect.Type) *jsonPlan {
	if m := jsonPlans.Load(); m != nil {
		if p, ok := (*m)[t]; ok {
			return p
		}
	}
	jsonPlansMu.Lock()
	defer jsonPlansMu.Unlock()
	old := jsonPlans.Load()
	if old != nil {
		if p, ok := (*old)[t]; ok {
			return p
		}
	}
	m := make(map[reflect.Type]*jsonPlan, 1+len(ptrOr(old)))
	for k, v := range ptrOr(old) {
		m[k] = v
	}
	p := planFor(t)
	m[t] = p
	jsonPlans.Store(&m)
	return p
}

func ptrOr(m *map[reflect.Type]*jsonPlan) map[reflect.Type]*jsonPlan {
	if m == nil {
		return nil
	}
	return *m
}

var (
	marshalerType       = reflect.TypeFor[json.Marshaler]()
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textMarshalerType   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// custom reports whether encoding/json would call a method of t or *t.
func custom(t reflect.Type) bool {
	if t == numberType {
		return true // a string type that encoding/json writes as a number
	}
	for _, u := range []reflect.Type{t, reflect.PointerTo(t)} {
		if u.Implements(marshalerType) || u.Implements(unmarshalerType) ||
			u.Implements(textMarshalerType) || u.Implements(textUnmarshalerType) {
			return true
		}
	}
	return false
}

var numberType = reflect.TypeFor[json.Number]()

func plainKind(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// planFor returns the plan of pt, a pointer type, or nil when encoding/json
// must do the work.
func planFor(pt reflect.Type) *jsonPlan {
	if pt.Kind() != reflect.Pointer {
		return nil
	}
	t := pt.Elem()
	if custom(t) {
		return nil
	}
	if plainKind(t.Kind()) {
		return &jsonPlan{scalar: t.Kind()}
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	p := &jsonPlan{fields: []planField{}}
	seen := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			return nil // embedding has rules of its own
		}
		if !f.IsExported() {
			continue
		}
		tag, hasTag := f.Tag.Lookup("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if !hasTag || name == "" {
			name = f.Name
		}
		omitEmpty := false
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "":
			case "omitempty":
				omitEmpty = true
			default:
				return nil // string, omitzero, or what a later Go may add
			}
		}
		if !plainKind(f.Type.Kind()) || custom(f.Type) || !plainName(name) {
			return nil
		}
		// Keys that differ only in case match each other when decoding.
		if fold := strings.ToLower(name); seen[fold] {
			return nil
		} else {
			seen[fold] = true
		}
		p.fields = append(p.fields, planField{name: name, key: `"` + name + `":`,
			offset: f.Offset, kind: f.Type.Kind(), omitEmpty: omitEmpty})
	}
	return p
}

// plainName reports whether encoding/json takes name as a key as it is,
// and writes it without escapes.
func plainName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c < 0x20 || c > 0x7e || strings.IndexByte("\"\\<>&", c) >= 0 {
			return false
		}
	}
	// encoding/json's isValidTag: what it accepts as a tag name.
	for _, c := range name {
		if !strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c) && !(c >= '0' && c <= '9') &&
			!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// plainString reports whether encoding/json writes s as it is, between
// quotes (and so does AppendPayload: it is ASCII).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// encode appends the encoding of the value at p, or reports false (having
// appended nothing) when encoding/json must do it.
func (pl *jsonPlan) encode(dst []byte, p unsafe.Pointer) ([]byte, bool) {
	if pl.fields == nil {
		return appendScalar(dst, pl.scalar, p)
	}
	start := len(dst)
	dst = append(dst, '{')
	first := true
	for i := range pl.fields {
		f := &pl.fields[i]
		fp := unsafe.Add(p, f.offset)
		if f.omitEmpty && isEmpty(f.kind, fp) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, f.key...)
		var ok bool
		if dst, ok = appendScalar(dst, f.kind, fp); !ok {
			return dst[:start], false
		}
	}
	return append(dst, '}'), true
}

// appendInt is strconv.AppendInt(dst, n, 10), written straight into dst:
// a stream of small integers spends much of its time here.
func appendInt(dst []byte, n int64) []byte {
	if n < 0 {
		return appendUint(append(dst, '-'), uint64(-n)) // -MinInt64 is MinInt64, whose bits are right
	}
	return appendUint(dst, uint64(n))
}

// appendUint is strconv.AppendUint(dst, u, 10), written straight into dst,
// two digits at a time.
func appendUint(dst []byte, u uint64) []byte {
	if u < 10 {
		return append(dst, byte('0'+u))
	}
	// The number of digits: from the bit length, then one comparison.
	n := mbits.Len64(u) * 1233 >> 12
	if u >= pow10[n] {
		n++
	}
	dst = slices.Grow(dst, n)
	end := len(dst) + n
	dst = dst[:end]
	i := end
	for u >= 100 {
		q := u / 100
		r := (u - q*100) * 2
		i -= 2
		dst[i], dst[i+1] = digitPairs[r], digitPairs[r+1]
		u = q
	}
	if u >= 10 {
		dst[i-2], dst[i-1] = digitPairs[u*2], digitPairs[u*2+1]
	} else {
		dst[i-1] = byte('0' + u)
	}
	return dst
}

const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

func appendScalar(dst []byte, k reflect.Kind, p unsafe.Pointer) ([]byte, bool) {
	switch k {
	case reflect.String:
		s := *(*string)(p)
		if !plainString(s) {
			return dst, false
		}
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"'), true
	case reflect.Bool:
		return strconv.AppendBool(dst, *(*bool)(p)), true
	case reflect.Int:
		return appendInt(dst, int64(*(*int)(p))), true
	case reflect.Int8:
		return appendInt(dst, int64(*(*int8)(p))), true
	case reflect.Int16:
		return appendInt(dst, int64(*(*int16)(p))), true
	case reflect.Int32:
		return appendInt(dst, int64(*(*int32)(p))), true
	case reflect.Int64:
		return appendInt(dst, *(*int64)(p)), true
	case reflect.Uint:
		return appendUint(dst, uint64(*(*uint)(p))), true
	case reflect.Uint8:
		return appendUint(dst, uint64(*(*uint8)(p))), true
	case reflect.Uint16:
		return appendUint(dst, uint64(*(*uint16)(p))), true
	case reflect.Uint32:
		return appendUint(dst, uint64(*(*uint32)(p))), true
	case reflect.Uint64:
		return appendUint(dst, *(*uint64)(p)), true
	}
	return dst, false
}

func isEmpty(k reflect.Kind, p unsafe.Pointer) bool {
	switch k {
	case reflect.String:
		return *(*string)(p) == ""
	case reflect.Bool:
		return !*(*bool)(p)
	case reflect.Int, reflect.Uint:
		return *(*uint)(p) == 0
	case reflect.Int64, reflect.Uint64:
		return *(*uint64)(p) == 0
	case reflect.Int32, reflect.Uint32:
		return *(*uint32)(p) == 0
	case reflect.Int16, reflect.Uint16:
		return *(*uint16)(p) == 0
	case reflect.Int8, reflect.Uint8:
		return *(*uint8)(p) == 0
	}
	return false
}

// maxPlanFields bounds the fields that decode sets at once.
const maxPlanFields = 16

// decode decodes data into the value at p, or reports false (having
// changed nothing) when encoding/json must do it: data is not one of the
// plainest encodings of such a value (no white space, no escapes, keys
// spelt exactly as the fields', no null) or is invalid.
func (pl *jsonPlan) decode(data []byte, p unsafe.Pointer) bool {
	if pl.fields == nil {
		v, ok := parseScalar(data, pl.scalar)
		if ok {
			v.store(pl.scalar, p)
		}
		return ok
	}
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return false
	}
	// The whole object is checked before any field is set.
	var set [maxPlanFields]struct {
		f *planField
		v scalarValue
	}
	n := 0
	rest := data[1 : len(data)-1]
	for len(rest) > 0 {
		if n > 0 {
			if rest[0] != ',' || len(rest) == 1 {
				return false
			}
			rest = rest[1:]
		}
		key, r, ok := plainJSONString(rest)
		if !ok || len(r) == 0 || r[0] != ':' {
			return false
		}
		rest = r[1:]
		var f *planField
		for i := range pl.fields {
			if pl.fields[i].name == string(key) {
				f = &pl.fields[i]
				break
			}
		}
		if f == nil || n == maxPlanFields {
			return false // perhaps a key in another case, or unknown
		}
		end := valueEnd(rest)
		v, ok := parseScalar(rest[:end], f.kind)
		if !ok {
			return false
		}
		set[n].f, set[n].v = f, v
		n++
		rest = rest[end:]
	}
	for i := range n {
		set[i].v.store(set[i].f.kind, unsafe.Add(p, set[i].f.offset))
	}
	return true
}

// valueEnd returns the length of the scalar value at the start of b: up
// to the next comma outside a string (the parsers reject the rest).
func valueEnd(b []byte) int {
	if len(b) > 0 && b[0] == '"' {
		for i := 1; i < len(b); i++ {
			switch b[i] {
			case '"':
				return i + 1
			case '\\':
				return len(b) // escapes are encoding/json's
			}
		}
		return len(b)
	}
	for i, c := range b {
		if c == ',' {
			return i
		}
	}
	return len(b)
}

// plainJSONString parses a string without escapes or control characters,
// in valid UTF-8, at the start of b.
func plainJSONString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			s = b[1:i]
			return s, b[i+1:], utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, nil, false
		}
	}
	return nil, nil, false
}

type scalarValue struct {
	s string
	u uint64 // bool, or an integer's bits
}

func parseScalar(b []byte, k reflect.Kind) (v scalarValue, ok bool) {
	switch k {
	case reflect.String:
		s, rest, ok := plainJSONString(b)
		if !ok || len(rest) != 0 {
			return v, false
		}
		return scalarValue{s: string(s)}, true
	case reflect.Bool:
		switch string(b) {
		case "true":
			return scalarValue{u: 1}, true
		case "false":
			return scalarValue{}, true
		}
		return v, false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n, ok := shortInt(b); ok {
			sh := 64 - bits(k)
			return scalarValue{u: uint64(n)}, n<<sh>>sh == n
		}
		if !jsonInteger(b) {
			return v, false
		}
		i, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(b), len(b)), 10, bits(k))
		return scalarValue{u: uint64(i)}, err == nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !jsonInteger(b) || b[0] == '-' {
			return v, false
		}
		u, err := strconv.ParseUint(unsafe.String(unsafe.SliceData(b), len(b)), 10, bits(k))
		return scalarValue{u: u}, err == nil
	}
	return v, false
}

// shortInt parses an integer of at most 18 digits (which cannot overflow
// an int64) in JSON's syntax; it reports false for anything else.
func shortInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	d := b
	if neg {
		d = b[1:]
	}
	if len(d) == 0 || len(d) > 18 || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	var n int64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// jsonInteger reports whether b is a JSON number without fraction or
// exponent.
func jsonInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 1 && b[0] == '0' {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func bits(k reflect.Kind) int {
	switch k {
	case reflect.Int8, reflect.Uint8:
		return 8
	case reflect.Int16, reflect.Uint16:
		return 16
	case reflect.Int32, reflect.Uint32:
		return 32
	case reflect.Int64, reflect.Uint64:
		return 64
	}
	return strconv.IntSize // int, uint
}

func (v scalarValue) store(k reflect.Kind, p unsafe.Pointer) {
	switch k {
	case reflect.String:
		*(*string)(p) = v.s
	case reflect.Bool:
		*(*bool)(p) = v.u != 0
	case reflect.Int:
		*(*int)(p) = int(v.u)
	case reflect.Int8:
		*(*int8)(p) = int8(v.u)
	case reflect.Int16:
		*(*int16)(p) = int16(v.u)
	case reflect.Int32:
		*(*int32)(p) = int32(v.u)
	case reflect.Int64:
		*(*int64)(p) = int64(v.u)
	case reflect.Uint:
		*(*uint)(p) = uint(v.u)
	case reflect.Uint8:
		*(*uint8)(p) = uint8(v.u)
	case reflect.Uint16:
		*(*uint16)(p) = uint16(v.u)
	case reflect.Uint32:
		*(*uint32)(p) = uint32(v.u)
	case reflect.Uint64:
		*(*uint64)(p) = v.u
	}
}

// planned returns the plan of v's type and the pointer v holds, if the
// fast path can take v.
func planned(v any) (*jsonPlan, unsafe.Pointer) {
	if v == nil {
		return nil, nil
	}
	pl := planOf(reflect.TypeOf(v))
	if pl == nil {
		return nil, nil
	}
	p := reflect.ValueOf(v).UnsafePointer()
	if p == nil {
		return nil, nil
	}
	return pl, p
}

// Plan is the fast path of one pointer type, looked up once rather than
// on every call: a stream encodes or decodes many values of one type. Its
// zero value has none.
type Plan struct{ pl *jsonPlan }

// PlanFor returns the plan of the pointer type pt.
func PlanFor(pt reflect.Type) Plan { return Plan{planOf(pt)} }

// Append appends the encoding of the value at p, a pointer of the plan's
// type, as Append would; it reports false, with dst unchanged, when the
// fast path cannot (Append then can).
func (p Plan) Append(dst []byte, v unsafe.Pointer) ([]byte, bool) {
	if p.pl == nil {
		return dst, false
	}
	out, ok := p.pl.encode(dst, v)
	if !ok {
		return dst, false
	}
	return out, true
}

// Decode decodes data into the value at v, a pointer of the plan's type,
// as Decode would; it reports false, having changed nothing, when the
// fast path cannot (Decode then can).
func (p Plan) Decode(data []byte, v unsafe.Pointer) bool {
	return p.pl != nil && p.pl.decode(data, v)
}
