package worker_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/isolated-workers/worker"
)

// TypeScript workers and hosts as users write them: a custom serializer, a
// validating middleware, Node's fork(), and Node's UTF-8 decoding per read
// (the stand-ins in testdata/node copy it).

var (
	nodeSeen = worker.Define[struct{}, struct {
		Types []string `json:"types"`
	}]("seen")
	nodeEcho = worker.Define[string, string]("echo")
)

// nodeWorker starts testdata/node/worker.js with env added, its stderr
// kept in the returned buffer.
func nodeWorker(t *testing.T, opts *worker.Options, env ...string) (*worker.Worker, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(nodePath(t), filepath.Join("testdata", "node", "worker.js"))
	cmd.Env = append(os.Environ(), env...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	w, err := worker.Spawn(testCtx(t), cmd, opts)
	if err != nil {
		t.Fatalf("Spawn: %v\nworker's stderr:\n%s", err, stderr)
	}
	t.Cleanup(func() { w.Close() })
	return w, stderr
}

// checkNothingOfOurs fails if the worker received any message of the
// library's own (the handshake, with the secret, or a control message).
func checkNothingOfOurs(t *testing.T, w *worker.Worker, stderr *syncBuffer) {
	t.Helper()
	seen, err := worker.Call(testCtx(t), w, nodeSeen, struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range seen.Types {
		if strings.HasPrefix(typ, "__iw.") {
			t.Errorf("the TypeScript worker received %q (all: %v)", typ, seen.Types)
		}
	}
	if s := stderr.String(); strings.Contains(s, "failed to parse") || strings.Contains(s, "rejected") {
		t.Errorf("the TypeScript worker could not take a frame of ours:\n%s", s)
	}
}

// With its own serializer on both sides ("\n\n"-terminated, pretty-printed
// JSON), a TypeScript worker answers the first call of a Go host that uses
// default options otherwise.
func TestTypeScriptWorkerWithCustomSerializer(t *testing.T) {
	w, stderr := nodeWorker(t, &worker.Options{Serializer: verboseJSON{}}, "IW_NODE_SERIALIZER=verbose")
	res, err := worker.Call(testCtx(t), w, nodePing, PingReq{Message: "héllo 🎉"})
	if err != nil || res.Message != "pong: héllo 🎉" {
		t.Fatalf("ping: %q, %v\nworker's stderr:\n%s", res.Message, err, stderr)
	}
	checkNothingOfOurs(t, w, stderr)
}

// A TypeScript worker whose middleware throws on message types outside its
// contract answers no message of ours: it must never be sent one.
func TestTypeScriptWorkerWithValidatingMiddleware(t *testing.T) {
	w, stderr := nodeWorker(t, nil, "IW_NODE_VALIDATE=1")
	res, err := worker.Call(testCtx(t), w, nodePing, PingReq{Message: "hi"})
	if err != nil || res.Message != "pong: hi" {
		t.Fatalf("ping: %q, %v\nworker's stderr:\n%s", res.Message, err, stderr)
	}
	checkNothingOfOurs(t, w, stderr)
}

// The TypeScript side decodes UTF-8 per socket read: a character split
// between two reads is corrupted unless it travels escaped, as worker.JSON
// sends it. A serializer that writes raw UTF-8 gets the corruption, and a
// warning in the host's log.
func TestTypeScriptWorkerNonASCII(t *testing.T) {
	text := strings.Repeat("é🎉", 1<<16) // 393 KiB: many reads, each likely to split a character
	w, _ := nodeWorker(t, nil)
	got, err := worker.Call(testCtx(t), w, nodeEcho, text)
	if err != nil || got != text {
		t.Fatalf("echo with worker.JSON: %d bytes, %v; want the text back intact", len(got), err)
	}

	var logs syncBuffer
	opts := &worker.Options{Serializer: rawJSON{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	w, _ = nodeWorker(t, opts)
	got, err = worker.Call(testCtx(t), w, nodeEcho, text)
	if err != nil || got == text || !strings.ContainsRune(got, utf8.RuneError) {
		t.Fatalf("echo with raw UTF-8: %d bytes, %v; want it corrupted by the per-read decoding", len(got), err)
	}
	if !strings.Contains(logs.String(), "outside ASCII") {
		t.Fatalf("no warning about raw non-ASCII in the host's log:\n%s", logs.String())
	}
}

// A TypeScript host starts its workers with Node's fork(): the Go binary
// gets Node's IPC channel on fd 3, which its own children must not inherit,
// and the startup data, which they must not see either.
func TestTypeScriptHostForksGoWorker(t *testing.T) {
	text := strings.Repeat("é🎉", 1<<15)
	out := runNodeHost(t, map[string]any{
		"fork": true, "module": "worker", // what a TS host's script option becomes: os.Args[1]
		"calls": []map[string]any{
			{"type": "ping", "payload": map[string]any{"message": "forked"}},
			{"type": "getenv", "payload": "NODE_CHANNEL_FD"},
			{"type": "getenv", "payload": "ISOLATED_WORKERS_STARTUP_DATA"},
			{"type": "childFD3", "payload": nil},
			{"type": "echoText", "payload": text},
		},
	})
	want := []string{`{"message":"pong: forked"}`, `""`, `""`, `"closed"`}
	for i, w := range want {
		if r := out.Results[i]; !r.OK || string(r.Payload) != w {
			t.Errorf("%s: ok=%v %s %+v; want %s", r.Type, r.OK, r.Payload, r.Error, w)
		}
	}
	var echoed string
	if r := out.Results[4]; !r.OK || json.Unmarshal(r.Payload, &echoed) != nil || echoed != text {
		t.Errorf("echoText through Node's per-read decoding: ok=%v, %d bytes; want the text intact", r.OK, len(echoed))
	}
}

type nodeHostOutput struct {
	Results []nodeResult `json:"results"`
	Worker  struct{ Code *int }
}

// runNodeHost runs testdata/node/host.js with script, whose command is this
// test binary (a Go worker), and returns what it printed.
func runNodeHost(t *testing.T, script map[string]any) nodeHostOutput {
	t.Helper()
	env := map[string]string{"GORACE": "atexit_sleep_ms=0"}
	if role, ok := script["role"].(string); ok {
		roleCmd(t, role) // registers the use, even where node is missing
		env[envRole] = role
		delete(script, "role")
	}
	node := nodePath(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script["command"] = exe
	script["env"] = env
	path := filepath.Join(t.TempDir(), "script.json")
	b, _ := json.Marshal(script)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), node, filepath.Join("testdata", "node", "host.js"), path)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("host.js: %v\nstderr: %s", err, stderr.String())
	}
	var out nodeHostOutput
	if err := json.Unmarshal(stdout, &out); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if n := len(script["calls"].([]map[string]any)); len(out.Results) != n {
		t.Fatalf("got %d results, want %d: %s", len(out.Results), n, stdout)
	}
	return out
}

// verboseJSON is the Go side of the stand-in's "verbose" serializer:
// pretty-printed JSON, frames ended by a blank line, non-ASCII escaped.
type verboseJSON struct{}

func (verboseJSON) Name() string       { return "VerboseJsonSerializer" }
func (verboseJSON) Terminator() []byte { return []byte("\n\n") }
func (verboseJSON) AppendPayload(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}
func (verboseJSON) DecodePayload(data []byte, v any) error { return json.Unmarshal(data, v) }
func (verboseJSON) AppendMessage(dst []byte, m *worker.Message) ([]byte, error) {
	b, err := json.MarshalIndent(tsEnvelope{Type: m.Type, Tx: m.Tx, Payload: m.Payload}, "", "  ")
	return appendEscaped(dst, b), err
}
func (verboseJSON) ParseMessage(frame []byte, m *worker.Message) error { return parseTS(frame, m) }

// rawJSON is a JSON line serializer that leaves non-ASCII raw, as a user's
// own serializer built on json.Marshal does.
type rawJSON struct{ verboseJSON }

func (rawJSON) Name() string       { return "JsonSerializer" }
func (rawJSON) Terminator() []byte { return []byte("\n") }
func (rawJSON) AppendMessage(dst []byte, m *worker.Message) ([]byte, error) {
	b, err := json.Marshal(tsEnvelope{Type: m.Type, Tx: m.Tx, Payload: m.Payload})
	return append(dst, b...), err
}

type tsEnvelope struct {
	Type    string          `json:"type"`
	Tx      string          `json:"tx"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func parseTS(frame []byte, m *worker.Message) error {
	var e tsEnvelope
	if err := json.Unmarshal(frame, &e); err != nil {
		return err
	}
	m.Type, m.Tx, m.Payload = e.Type, e.Tx, e.Payload
	return nil
}

// appendEscaped is the recipe of examples/custom-serializer: JSON text with
// every character outside ASCII as a \uXXXX escape.
func appendEscaped(dst, js []byte) []byte {
	const hex = "0123456789abcdef"
	u := func(dst []byte, r rune) []byte {
		return append(dst, '\\', 'u', hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15])
	}
	for _, r := range string(js) {
		switch {
		case r < utf8.RuneSelf:
			dst = append(dst, byte(r))
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			dst = u(u(dst, r1), r2)
		default:
			dst = u(dst, r)
		}
	}
	return dst
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A Go program that a Go worker starts does not take itself for a worker:
// the worker removed the startup data from its environment.
func TestWorkersChildIsNotAWorker(t *testing.T) {
	rolesUsed.Store("child-main", true) // requested by the worker, a process of its own
	w := spawn(t, "worker", nil)
	out, err := worker.Call(testCtx(t), w, ChildRun, worker.Void{})
	if err != nil || out != "not a worker" {
		t.Fatalf("the child printed %q, %v; want worker.Main to return in it", out, err)
	}
}

// A TypeScript host with its own serializer drives a Go worker configured
// with the matching one.
func TestTypeScriptHostWithCustomSerializer(t *testing.T) {
	out := runNodeHost(t, map[string]any{
		"serializer": "verbose", "role": "worker-verbose",
		"calls": []map[string]any{
			{"type": "ping", "payload": map[string]any{"message": "verbose é"}},
			{"type": "echoText", "payload": "a\n\nb"},
		},
	})
	for i, want := range []string{`{"message":"pong: verbose é"}`, `"a\n\nb"`} {
		if r := out.Results[i]; !r.OK || string(r.Payload) != want {
			t.Errorf("%s: ok=%v %s %+v; want %s", r.Type, r.OK, r.Payload, r.Error, want)
		}
	}
}
