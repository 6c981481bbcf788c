package worker_test

import (
	"encoding/binary"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

func memStatsOf(t *testing.T, w *worker.Worker, reset bool) memStats {
	t.Helper()
	st, err := worker.Call(testCtx(t), w, MemStats, reset)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A worker reads a request just under its limit (64 MiB), or one over it,
// with both framings, at a cost in memory of little more than the limit:
// the peak of its RSS and the growth of its heap stay under 1.3 times the
// limit (growing the buffer by doubling cost three times the limit, held
// until the connection closed). It keeps none of that memory once the
// request is handled, while the connection stays open, or refused.
func TestMemoryWorkerBigRequest(t *testing.T) {
	const limit = 64 << 20
	for _, tc := range []struct {
		name      string
		bin, over bool
	}{{"JSON under the limit", false, false}, {"JSON over the limit", false, true},
		{"Binary under the limit", true, false}, {"Binary over the limit", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := &worker.Options{}
			if tc.bin {
				opts.Serializer = worker.Binary
			}
			w := spawn(t, "mem-worker", opts)
			base := memStatsOf(t, w, true)
			h := dialRaw(t, w, tc.bin)
			h.sendBig(limit, tc.over)
			e, err := h.recv()
			switch {
			case tc.over && string(e.Type) != "__iw.protocolError":
				t.Fatalf("after a request over the limit: %q, %v; want a protocol error", e.Type, err)
			case tc.over:
				if _, err := io.ReadAll(h.conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("reading to the end of the connection: %v", err)
				}
			case err != nil || string(e.Type) != "memSinkResult":
				t.Fatalf("the reply to the request: %q, %v", e.Type, err)
			}
			after := memStatsOf(t, w, false)
			if !raceEnabled { // the race detector's shadow memory is in the RSS too
				checkMem(t, "the worker's peak RSS grew by", int64(after.HWM-base.HWM), limit)
			}
			checkMem(t, "the worker's heap grew by", int64(after.HeapSys)-int64(base.HeapSys), limit)
			if kept := int64(after.HeapInuse) - int64(base.HeapInuse); kept > limit/8 {
				t.Fatalf("the worker keeps %d bytes (%.2f times the limit) in its heap after the request", kept, float64(kept)/limit)
			}
		})
	}
}

// sendBig sends a memSink request of limit-64 bytes, or of limit+2 MiB,
// whose payload is {"pad": ...}.
func (h *rawHost) sendBig(limit int, over bool) {
	h.t.Helper()
	size := limit - 64
	if over {
		size = limit + 2<<20
	}
	if h.term != nil {
		err := writePadded(h.conn, `{"type":"memSink","tx":"big","payload":{"pad":"`, size, "\"}}\n")
		if err != nil && !over { // the worker refuses one over the limit before its end
			h.t.Fatal(err)
		}
		return
	}
	// Binary: a length prefix, the envelope's head, and the payload, a
	// CBOR map {"pad": a byte string} (whose head takes 5 bytes).
	head := wire.AppendBinaryHead(nil, MemSink.Name(), "big", 0)
	head = append(head, 0xa1, 0x63, 'p', 'a', 'd')
	pad := size - len(head) - 5
	head = wire.AppendCBORHead(head, 2, uint64(pad))
	h.write(append(binary.BigEndian.AppendUint32(nil, uint32(size)), head...))
	if over {
		return // refused on its length alone
	}
	for ; pad > 0; pad -= len(padChunk) {
		h.write(padChunk[:min(pad, len(padChunk))])
	}
}
