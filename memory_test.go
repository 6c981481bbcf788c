package worker_test

// Memory of big frames: reading one costs little more than the limit, and
// the memory is not kept once the frame is handled or refused. The
// worker's side, measured in a real worker process, is in
// memory_linux_test.go; the host's, in this process, here.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

// MemSink's handler ignores its payload (a big one, {"pad": ...}, decodes
// into Void without allocating it) and returns nothing.
var MemSink = worker.Define[worker.Void, worker.Void]("memSink")

// memStats is what the mem worker reports of its memory.
type memStats struct {
	HWM, RSS  uint64 // VmHWM and VmRSS
	HeapInuse uint64 // after a collection
	HeapSys   uint64 // all but never shrinks: its growth bounds the heap's peak
}

// MemStats's handler reports its worker's memory, after a collection
// that returns what it can to the system; given true, it then resets the
// process's peak RSS (VmHWM) to its current RSS.
var MemStats = worker.Define[bool, memStats]("memStats")

// memWorker is the "mem-worker" role: the test worker (with the default
// limit of 64 MiB) plus MemSink and MemStats.
func memWorker() {
	s := worker.NewServer(nil)
	registerHandlers(s)
	worker.Handle(s, MemSink, func(context.Context, worker.Void) (worker.Void, error) { return worker.Void{}, nil })
	worker.Handle(s, MemStats, func(_ context.Context, reset bool) (memStats, error) {
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if reset {
			if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
				return memStats{}, err
			}
		}
		st := memStats{HeapInuse: ms.HeapInuse, HeapSys: ms.HeapSys}
		b, err := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch k {
			case "VmHWM":
				st.HWM = kb << 10
			case "VmRSS":
				st.RSS = kb << 10
			}
		}
		return st, err
	})
	worker.Main(s)
	fmt.Fprintln(os.Stderr, "worker.Main returned in a worker")
	os.Exit(2)
}

// padChunk is what writePadded pads with, a piece at a time.
var padChunk = bytes.Repeat([]byte("x"), 1<<20)

// writePadded writes a JSON frame of size bytes to w: head, then padding,
// then tail.
func writePadded(w io.Writer, head string, size int, tail string) error {
	chunk := padChunk
	if _, err := io.WriteString(w, head); err != nil {
		return err
	}
	for n := size - len(head) - len(tail); n > 0; n -= len(chunk) {
		if _, err := w.Write(chunk[:min(n, len(chunk))]); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, tail)
	return err
}

// heapInUse returns the heap's live bytes, after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// The host's Client reads a reply just under its limit, and one over it,
// allocating little more than the limit (growing its buffer by doubling
// would allocate three times the limit); it does not keep that memory once
// the reply is delivered or refused, though the Client lives on.
func TestMemoryClientBigReply(t *testing.T) {
	const limit = 32 << 20
	for _, over := range []bool{false, true} {
		t.Run(map[bool]string{false: "under the limit", true: "over the limit"}[over], func(t *testing.T) {
			host, fake := net.Pipe()
			defer fake.Close()
			c, err := worker.NewClient(testCtx(t), host, &worker.Options{BaseProtocol: true, MaxMessageSize: limit})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			done := make(chan error, 1)
			go func() {
				_, err := worker.Call(context.Background(), c, MemSink, worker.Void{})
				done <- err
			}()
			var e wire.Envelope
			if line, err := wire.NewReader(fake, []byte("\n"), 1<<20).Next(); err != nil || wire.ParseJSON(line, &e) != nil {
				t.Fatalf("reading the request: %q, %v", line, err)
			}
			base, alloc := heapInUse(), totalAlloc()
			head := fmt.Sprintf(`{"type":"memSinkResult","tx":%q,"payload":{"pad":"`, e.Tx)
			if over {
				writePadded(fake, head, limit+2<<20, "") // fails once the Client has refused it
			} else if err := writePadded(fake, head, limit, "\"}}\n"); err != nil {
				t.Fatal(err)
			}
			err = <-done
			if over != errors.Is(err, worker.ErrProtocol) {
				t.Fatalf("the call: %v", err)
			}
			checkMem(t, "reading the reply allocated", int64(totalAlloc()-alloc), limit)
			if kept := int64(heapInUse()) - int64(base); kept > limit/8 {
				t.Fatalf("the Client keeps %d bytes (%.2f times the limit) after the reply", kept, float64(kept)/limit)
			}
			runtime.KeepAlive(c)
		})
	}
}

// checkMem fails the test if n bytes, what one frame cost, are more than
// 1.3 times the limit: growing a buffer in steps costs 1.125 times the
// limit at most.
func checkMem(t *testing.T, what string, n int64, limit int) {
	t.Helper()
	ratio := float64(n) / float64(limit)
	t.Logf("%s %d bytes: %.2f times the limit", what, n, ratio)
	if ratio > 1.3 {
		t.Errorf("%s %d bytes: %.2f times the limit of %d; want at most 1.3", what, n, ratio, limit)
	}
}
