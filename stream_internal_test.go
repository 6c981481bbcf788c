package worker

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/isolated-workers/worker/internal/wire"
)

// The write queue never waits for a stream's lock: a pull that finds it
// held asks the holder, who wakes the queue again as it lets go, so the
// items added meanwhile still go out at once.
func TestPullMeetsAHeldLock(t *testing.T) {
	h, w := net.Pipe()
	defer h.Close()
	defer w.Close()
	ss := &session{codec: newCodec(JSON, 1<<20), conn: w}
	ss.wq = wire.WriteQueue{Conn: w, Broken: func(error) { w.Close() }}
	o := newOutStream(ss, "t1")
	o.plan = planFor[int](ss.codec)
	o.grant(10, 1<<20)
	rd := wire.NewReader(h, []byte("\n"), 1<<20)
	next := func() string {
		t.Helper()
		h.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("reading a batch: %v", err)
		}
		return string(f)
	}
	r := &request{parent: context.Background()}
	if err := sendItem(r, o, new(int), 7); err != nil {
		t.Fatal(err)
	}
	if f := next(); f != `{"type":"__iw.items","tx":"t1","payload":[7]}` {
		t.Fatalf("first batch %s", f)
	}

	o.mu.Lock() // a sender, in the middle of adding an item
	ss.wq.Wake(o)
	for !o.want.Load() {
		runtime.Gosched() // the queue's pull meets the lock
	}
	slot := new(int)
	*slot = 8
	if ok, _, err := o.add(slot, unsafe.Pointer(slot)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	o.unlock() // the holder wakes the queue (add's own wake is left out)
	if f := next(); !bytes.Contains([]byte(f), []byte(`"payload":[8]`)) {
		t.Fatalf("second batch %s", f)
	}
}
