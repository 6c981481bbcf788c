package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testFrame is a self-checking frame: length, writer, sequence, filler.
func testFrame(writer, seq, size int) []byte {
	f := make([]byte, size)
	binary.BigEndian.PutUint32(f, uint32(size))
	binary.BigEndian.PutUint32(f[4:], uint32(writer))
	binary.BigEndian.PutUint32(f[8:], uint32(seq))
	for i := 12; i < size; i++ {
		f[i] = byte(writer + seq + i)
	}
	return f
}

// readFrames reads testFrames until EOF and checks them.
func readFrames(t *testing.T, r io.Reader) (got map[int][]int) {
	got = map[int][]int{}
	var hdr [12]byte
	for {
		if _, err := io.ReadFull(r, hdr[:4]); err != nil {
			return got
		}
		size := int(binary.BigEndian.Uint32(hdr[:4]))
		rest := make([]byte, size-4)
		if _, err := io.ReadFull(r, rest); err != nil {
			t.Errorf("a frame cut short: %v", err)
			return got
		}
		w, seq := int(binary.BigEndian.Uint32(rest)), int(binary.BigEndian.Uint32(rest[4:]))
		if want := testFrame(w, seq, size); !bytes.Equal(want[4:], rest) {
			t.Errorf("frame %d/%d is corrupt", w, seq)
		}
		got[w] = append(got[w], seq)
	}
}

func TestWqueueManyWriters(t *testing.T) {
	for _, kind := range []string{"pipe", "unix"} {
		t.Run(kind, func(t *testing.T) {
			a, b := testConnPair(t, kind)
			q := &WriteQueue{Conn: a, Broken: func(error) { a.Close() }}
			done := make(chan map[int][]int)
			go func() { done <- readFrames(t, b) }()
			const writers, each = 16, 200
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for seq := range each {
						size := 16 + (w*31+seq*7)%300
						if seq%50 == 49 {
							size = CoalesceMax + 100 // now and then a big one
						}
						f, tail := testFrame(w, seq, size), []byte(nil)
						if seq%100 == 99 {
							f, tail = f[:100], f[100:] // and a big one in two parts
						}
						if _, _, err := q.Write(nil, f, tail, time.Time{}, seq%3 == 0, true); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			q.Idle()
			a.Close()
			got := <-done
			for w := range writers {
				if len(got[w]) != each {
					t.Fatalf("writer %d: %d frames arrived, want %d", w, len(got[w]), each)
				}
				for i, s := range got[w] {
					if s != i {
						t.Fatalf("writer %d: frame %d arrived as number %d", w, s, i)
					}
				}
			}
		})
	}
}

// A queued frame taken back never arrives, whether it was still queued or
// in a write that nobody read; the others do, whole.
func TestWqueueRemove(t *testing.T) {
	a, b := newEnteringPipe() // a write blocks until it is read
	defer b.Close()
	var brokenCalls atomic.Int32
	q := &WriteQueue{Conn: a, Broken: func(error) { brokenCalls.Add(1); a.Close() }}
	// The first frame is written directly and blocks: nobody reads yet.
	first := make(chan error, 1)
	go func() { _, _, err := q.Write(nil, testFrame(0, 0, 40), nil, time.Time{}, true, true); first <- err }()
	<-a.entered
	var tickets []uint64
	for seq := 1; seq <= 6; seq++ {
		tk, _, err := q.Write(nil, testFrame(0, seq, 40), nil, time.Time{}, false, true)
		if err != nil || tk == 0 {
			t.Fatalf("queueing %d: ticket %d, %v", seq, tk, err)
		}
		tickets = append(tickets, tk)
	}
	if !q.Remove(tickets[1]) { // frame 2, still queued
		t.Fatal("a queued frame could not be taken back")
	}
	// Read the first frame and part of the second: the flusher is now
	// writing the batch (frames 1, 3, 4, 5, 6) and blocks.
	buf := make([]byte, 40+10)
	if _, err := io.ReadFull(b, buf); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// Frame 1 is partly written: it cannot be taken back; frame 4 can.
	if q.Remove(tickets[0]) {
		t.Fatal("a frame partly written was taken back")
	}
	if !q.Remove(tickets[3]) {
		t.Fatal("a frame in a blocked write could not be taken back")
	}
	go func() { q.Idle(); a.Close() }()
	rest := readFrames(t, io.MultiReader(bytes.NewReader(buf), b))
	if fmt.Sprint(rest[0]) != "[0 1 3 5 6]" {
		t.Fatalf("frames arrived: %v, want [0 1 3 5 6]", rest[0])
	}
	if n := brokenCalls.Load(); n != 0 {
		t.Fatalf("broken called %d times", n)
	}
}

// A write that fails breaks the stream once; writers waiting are released.
func TestWqueueBroken(t *testing.T) {
	a, b := newEnteringPipe()
	var brokenCalls atomic.Int32
	q := &WriteQueue{Conn: a, Broken: func(error) { brokenCalls.Add(1); a.Close() }}
	go func() {
		q.Write(nil, testFrame(0, 0, 40), nil, time.Time{}, true, true) // blocks, then fails
	}()
	<-a.entered
	big := make(chan error, 1)
	go func() {
		_, _, err := q.Write(nil, testFrame(1, 0, CoalesceMax+1), nil, time.Time{}, true, true)
		big <- err
	}()
	b.Close()
	if err := <-big; err == nil {
		t.Fatal("a big frame waiting to be written: no error after the stream broke")
	}
	if _, broken, err := q.Write(nil, testFrame(2, 0, 40), nil, time.Time{}, true, true); err == nil || !broken {
		t.Fatalf("a write after the stream broke: %v, %v", broken, err)
	}
	if n := brokenCalls.Load(); n != 1 {
		t.Fatalf("broken called %d times", n)
	}
}

// Waiting for room respects the done channel; a write that times out
// before its first byte leaves the stream intact.
func TestWqueueWaitAndTimeout(t *testing.T) {
	a, b := newEnteringPipe()
	defer b.Close()
	q := &WriteQueue{Conn: a, Broken: func(error) { a.Close() }}
	_, broken, err := q.Write(nil, testFrame(0, 0, 40), nil, time.Now().Add(20*time.Millisecond), true, true)
	<-a.entered
	var ne net.Error
	if err == nil || broken || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a write that nobody read: %v, %v; want a timeout that leaves the stream intact", broken, err)
	}
	// A big frame waits for a writer that blocks; done cuts the wait short.
	go q.Write(nil, testFrame(0, 1, 40), nil, time.Time{}, true, true)
	<-a.entered
	done := make(chan struct{})
	close(done)
	if _, _, err := q.Write(done, testFrame(1, 0, CoalesceMax+1), nil, time.Time{}, true, true); err != ErrWaitCanceled {
		t.Fatalf("waiting with done closed: %v", err)
	}
	go func() { q.Idle(); a.Close() }()
	if got := readFrames(t, b); fmt.Sprint(got) != "map[0:[1]]" {
		t.Fatalf("frames arrived: %v", got)
	}
}

func testConnPair(t *testing.T, kind string) (net.Conn, net.Conn) {
	if kind == "pipe" {
		return net.Pipe()
	}
	if runtime.GOOS == "windows" {
		// Wine has no AF_UNIX, and its os.RemoveAll breaks t.TempDir.
		t.Skip("no Unix sockets here; the pipe case covers the queue")
	}
	// Not t.TempDir: a path under it, named after the test, can pass the
	// 104-108 bytes that a socket address holds.
	dir, err := os.MkdirTemp("", "wq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return a, <-acc
}

// enteringConn tells, on entered, each time a Write begins.
type enteringConn struct {
	net.Conn
	entered chan struct{}
}

func (c *enteringConn) Write(b []byte) (int, error) {
	c.entered <- struct{}{}
	return c.Conn.Write(b)
}

func newEnteringPipe() (*enteringConn, net.Conn) {
	a, b := net.Pipe()
	return &enteringConn{Conn: a, entered: make(chan struct{}, 100)}, b
}

// testSource is a Source of testFrames from one producer: it appends
// frames while the queue writes, and the queue pulls them all at once.
type testSource struct {
	mu     sync.Mutex
	frames []byte
	pulls  int
}

func (s *testSource) Pull(dst []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.frames) > 0 {
		s.pulls++
	}
	dst = append(dst, s.frames...)
	s.frames = s.frames[:0]
	return dst
}

func (s *testSource) add(f []byte) {
	s.mu.Lock()
	s.frames = append(s.frames, f...)
	s.mu.Unlock()
}

// A source's frames go with the next write, after the frames queued by
// then, and what it adds while a write is held up goes in one pull.
func TestWqueueSourcePulledWithTheNextWrite(t *testing.T) {
	for _, kind := range []string{"pipe", "unix"} {
		t.Run(kind, func(t *testing.T) {
			a, b := testConnPair(t, kind)
			q := &WriteQueue{Conn: a, Broken: func(error) { a.Close() }}
			src := &testSource{}
			// A big frame held up by a reader that has not started yet (a
			// socket takes a few hundred KiB before it blocks).
			big := testFrame(0, 0, 4<<20)
			wrote := make(chan error, 1)
			go func() { _, _, err := q.Write(nil, big, nil, time.Time{}, true, false); wrote <- err }()
			waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return q.writer == directWriter })
			if _, _, err := q.Write(nil, testFrame(1, 0, 64), nil, time.Time{}, false, false); err != nil {
				t.Fatal(err)
			}
			for i := range 100 {
				src.add(testFrame(2, i, 32))
				q.Wake(src)
			}
			if _, _, err := q.Write(nil, testFrame(1, 1, 64), nil, time.Time{}, false, false); err != nil {
				t.Fatal(err)
			}
			done := make(chan []int)
			go func() {
				var order []int
				var hdr [12]byte
				for {
					if _, err := io.ReadFull(b, hdr[:4]); err != nil {
						done <- order
						return
					}
					rest := make([]byte, binary.BigEndian.Uint32(hdr[:4])-4)
					io.ReadFull(b, rest)
					order = append(order, int(binary.BigEndian.Uint32(rest)))
				}
			}()
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			q.Idle()
			a.Close()
			order := <-done
			// 0 (the big frame), then the queue (1, 1), then the source's.
			want := []int{0, 1, 1}
			for range 100 {
				want = append(want, 2)
			}
			if fmt.Sprint(order) != fmt.Sprint(want) {
				t.Fatalf("frames in the order %v", order)
			}
			if src.pulls != 1 {
				t.Fatalf("%d pulls for 100 frames added while a write was held up, want 1", src.pulls)
			}
		})
	}
}

// waitFor polls cond, yielding in between, until it holds; it fails the
// test after 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a condition")
		}
	}
}
