package worker_test

import (
	"testing"

	"github.com/isolated-workers/worker"
)

func TestSpawnPingClose(t *testing.T) {
	w := spawn(t, "worker", nil)
	res, err := worker.Call(testCtx(t), w, Ping, PingReq{Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Message != "pong: hi" {
		t.Fatalf("got %q", res.Message)
	}
	pid := w.Pid()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.IsActive() {
		t.Fatalf("worker %d still active after Close", pid)
	}
}
