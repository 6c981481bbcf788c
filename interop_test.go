package worker_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/isolated-workers/worker"
)

// These tests check wire compatibility with the TypeScript library, using
// the Node stand-ins for its two peers in testdata/node (the library is not
// published on npm; the stand-ins follow its protocol, see their README).

func nodePath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" && runtime.GOOS != "windows" {
			t.Fatal("node is required in CI for the interop tests")
		}
		t.Skip("node is not installed: the TypeScript interop tests need it")
	}
	return p
}

// The contract of testdata/node/worker.js.
type (
	nodeAdd struct {
		A int `json:"a"`
		B int `json:"b"`
	}
	nodeSum  struct{ Sum int }
	nodeFail struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	}
	nodeCode struct {
		Code int `json:"code"`
	}
	nodeCommon = PingReq
)

var (
	nodePing  = worker.Define[nodeCommon, PingRes]("ping")
	nodeAddM  = worker.Define[nodeAdd, nodeSum]("add")
	nodeVoid  = worker.Define[struct{}, worker.Void]("void")
	nodeFailM = worker.Define[nodeFail, worker.Void]("fail")
	nodeType  = worker.Define[struct{}, worker.Void]("typeError")
	nodeExit  = worker.Define[nodeCode, worker.Void]("exit")
	nodeNone  = worker.Define[struct{}, worker.Void]("noSuchType")
)

func TestGoHostDrivesTypeScriptWorker(t *testing.T) {
	node := nodePath(t)
	cmd := exec.Command(node, filepath.Join("testdata", "node", "worker.js"))
	w, err := worker.Spawn(testCtx(t), cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := testCtx(t)

	res, err := worker.Call(ctx, w, nodePing, PingReq{Message: "héllo 🎉"})
	if err != nil || res.Message != "pong: héllo 🎉" {
		t.Fatalf("ping: %q, %v", res.Message, err)
	}
	sum, err := worker.Call(ctx, w, nodeAddM, nodeAdd{A: 2, B: 40})
	if err != nil || sum.Sum != 42 {
		t.Fatalf("add: %v, %v", sum, err)
	}
	if _, err := worker.Call(ctx, w, nodeVoid, struct{}{}); err != nil {
		t.Fatalf("void: %v", err)
	}
	_, err = worker.Call(ctx, w, nodeFailM, nodeFail{Message: "nope", Code: "E_NOT_FOUND"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("fail: %v does not match the coded sentinel", err)
	}
	var re *worker.RemoteError
	if errors.As(err, &re); re.Message != "nope" || re.Name != "Error" || !strings.Contains(re.Stack, "worker.js") {
		t.Fatalf("fail: got %#v", re)
	}
	_, err = worker.Call(ctx, w, nodeType, struct{}{})
	if !errors.As(err, &re) || re.Name != "TypeError" {
		t.Fatalf("typeError: got %v", err)
	}
	_, err = worker.Call(ctx, w, nodeNone, struct{}{})
	if !errors.Is(err, worker.ErrUnknownMessage) {
		t.Fatalf("unknown type: got %v", err)
	}
	// A stream cannot be: it fails at once, nothing sent, and ordinary
	// calls go on.
	if _, err := collect(worker.Stream(ctx, w, STCount, 3)); !errors.Is(err, worker.ErrUnsupported) {
		t.Fatalf("a stream to a TypeScript worker: %v", err)
	}
	if _, err := worker.Call(ctx, w, nodePing, PingReq{Message: "still"}); err != nil {
		t.Fatalf("a call after the stream: %v", err)
	}
	// A TypeScript worker keeps listening after a disconnect.
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if err := w.Reconnect(ctx); err != nil {
		t.Fatalf("Reconnect: %v", err)
	}
	if _, err := worker.Call(ctx, w, nodePing, PingReq{Message: "again"}); err != nil {
		t.Fatalf("after reconnect: %v", err)
	}
	// And a crash fails the call at once with the exit code.
	_, err = worker.Call(ctx, w, nodeExit, nodeCode{Code: 7})
	var ce *worker.CrashError
	if !errors.As(err, &ce) || ce.ExitCode != 7 || ce.Type != "exit" {
		t.Fatalf("exit: got %v", err)
	}
}

type nodeResult struct {
	Type    string          `json:"type"`
	OK      bool            `json:"ok"`
	Payload json.RawMessage `json:"payload"`
	Error   *struct {
		Message, Name, Code string
	} `json:"error"`
}

func TestTypeScriptHostDrivesGoWorker(t *testing.T) {
	node := nodePath(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := map[string]any{
		"command":    exe,
		"args":       []string{"-test.run=^$"},
		"env":        map[string]string{"GORACE": "atexit_sleep_ms=0"},
		"concurrent": true,
		"calls": []map[string]any{
			{"type": "ping", "payload": map[string]any{"message": "from node é"}},
			{"type": "add", "payload": map[string]any{"A": 1, "B": 2}},
			{"type": "notify", "payload": map[string]any{"message": "x"}},
			{"type": "fail", "payload": map[string]any{"Message": "bad", "Code": "E_NOT_FOUND"}},
			{"type": "nope", "payload": map[string]any{}},
			{"type": "sleep", "payload": map[string]any{"ms": 10}},
		},
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "script.json")
	b, _ := json.Marshal(script)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), node, filepath.Join("testdata", "node", "host.js"), path)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		errors.As(err, &ee)
		t.Fatalf("host.js: %v\nstderr: %s", err, ee.Stderr)
	}
	var got struct {
		Results []nodeResult `json:"results"`
		Worker  struct{ Code *int }
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	r := got.Results
	if len(r) != 6 {
		t.Fatalf("got %d results: %s", len(r), out)
	}
	check := func(i int, ok bool, want string) {
		t.Helper()
		s := string(r[i].Payload)
		if r[i].Error != nil {
			s = r[i].Error.Name + ":" + r[i].Error.Message + ":" + r[i].Error.Code
		}
		if r[i].OK != ok || s != want {
			t.Errorf("%s: ok=%v %s, want ok=%v %s", r[i].Type, r[i].OK, s, ok, want)
		}
	}
	check(0, true, `{"message":"pong: from node é"}`)
	check(1, true, `{"Sum":3}`)
	check(2, true, "")
	check(3, false, `Error:looking up "bad": not found:E_NOT_FOUND`)
	check(4, false, "Error:Unknown message type: nope:E_UNKNOWN_MESSAGE")
	check(5, true, `{"slept":true,"ctxErr":"","hasDeadline":false}`)
	if got.Worker.Code == nil || *got.Worker.Code != 0 {
		t.Errorf("the Go worker did not exit 0 after the TypeScript host's SIGTERM: %s", out)
	}
}
