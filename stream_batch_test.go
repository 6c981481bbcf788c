package worker_test

// Items travel in batches (__iw.items): what the batching must never
// cost (an item held back), and what a worker that breaks the batches'
// rules gets.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

// An item is written as soon as it is sent, not when more items come or
// the handler returns: after each item the worker waits for the host to
// confirm that its range has it, so an item held back fails the stream
// (the host's handler gives up after a while).
func TestStreamItemGoesAtOnce(t *testing.T) {
	t.Parallel()
	for _, s := range serializers {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			var seen atomic.Int64
			seen.Store(-1)
			got := make(chan struct{}, 1)
			hs := worker.NewServer(nil)
			worker.Handle(hs, HostSeen, func(ctx context.Context, n int) (worker.Void, error) {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				for seen.Load() < int64(n) {
					select {
					case <-got:
					case <-ctx.Done():
						return worker.Void{}, fmt.Errorf("item %d has not reached the range: %w", n, ctx.Err())
					}
				}
				return worker.Void{}, nil
			})
			w := spawn(t, s.role, &worker.Options{Serializer: s.ser, Handlers: hs})
			items, result := worker.Stream(testCtx(t), w, STLockstep, 50)
			for i, err := range items {
				if err != nil {
					t.Fatal(err)
				}
				seen.Store(int64(i))
				select {
				case got <- struct{}{}:
				default:
				}
			}
			if _, err := result(); err != nil || seen.Load() != 49 {
				t.Fatalf("last item %d, %v", seen.Load(), err)
			}
		})
	}
}

// Byte items big and small, in order and whole: under Binary a big one
// goes as a batch of its own, its bytes written as they are, after the
// small ones sent before it.
func TestStreamBytesItems(t *testing.T) {
	t.Parallel()
	sizes := []int{10, 100_000, 5, 40_000, 70_000, 1, 0, 300_000, 3, 33 << 10, 2}
	for _, s := range serializers {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			w := spawn(t, s.role, &worker.Options{Serializer: s.ser, StreamWindowBytes: 64 << 10})
			for range 3 {
				got, err := collect(worker.Stream(testCtx(t), w, STBytes, sizes))
				if err != nil || len(got) != len(sizes) {
					t.Fatalf("%d items, %v", len(got), err)
				}
				for i, b := range got {
					if !bytes.Equal(b, stBytesItem(i, sizes[i])) {
						t.Fatalf("item %d: %d bytes, not the %d sent", i, len(b), sizes[i])
					}
				}
			}
		})
	}
}

// Streams under a serializer of the user's: a batch is its encoding of
// the items' encodings ([][]byte).
func TestStreamCustomSerializer(t *testing.T) {
	t.Parallel()
	srv := worker.NewServer(&worker.ServerOptions{Serializer: verboseJSON{}})
	worker.HandleStream(srv, rvSizes, func(ctx context.Context, sizes []int, send func(string) error) (worker.Void, error) {
		for _, n := range sizes {
			if err := send(strings.Repeat("é", n)); err != nil {
				return worker.Void{}, err
			}
		}
		return worker.Void{}, nil
	})
	h, wk := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.ServeConn(ctx, wk); close(served) }()
	c, err := worker.NewClient(context.Background(), h, &worker.Options{Serializer: verboseJSON{}, StreamWindow: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); cancel(); <-served }()
	sizes := make([]int, 300)
	for i := range sizes {
		sizes[i] = i % 17
	}
	got, err := collect(worker.Stream(testCtx(t), c, rvSizes, sizes))
	if err != nil || len(got) != len(sizes) {
		t.Fatalf("%d items, %v", len(got), err)
	}
	for i, s := range got {
		if s != strings.Repeat("é", sizes[i]) {
			t.Fatalf("item %d: %q", i, s)
		}
	}
}

// streamFake is a worker, played by the test on a raw connection, that
// speaks the stream extension and answers the stream call with frames.
func streamFake(t *testing.T, opts *worker.Options, frames func(tx string) []string) *worker.Client {
	return streamFakeWith(t, opts, func(tx string, write func(string) bool) {
		for _, f := range frames(tx) {
			if !write(f) {
				return
			}
		}
	})
}

// streamFakeWith is streamFake whose answer is written by answer.
func streamFakeWith(t *testing.T, opts *worker.Options, answer func(tx string, write func(string) bool)) *worker.Client {
	t.Helper()
	host, wk := net.Pipe()
	opts.NewTx = func(*worker.Message) string { return "s1" }
	go func() {
		defer wk.Close()
		rd := wire.NewReader(wk, []byte("\n"), 1<<20)
		hello, err := rd.Next()
		var e wire.Envelope
		if err != nil || wire.ParseJSON(hello, &e) != nil {
			return
		}
		wk.Write([]byte(`{"type":"__iw.helloResult","tx":"` + string(e.Tx) + `","payload":{"protocol":1,"serializer":"JsonSerializer",` +
			`"pid":1,"keepAlive":false,"capabilities":["cancel","deadline","shutdown","stream"]}}` + "\n"))
		for {
			frame, err := rd.Next()
			if err != nil {
				return
			}
			var e wire.Envelope
			if wire.ParseJSON(frame, &e) != nil || string(e.Type) != "stCount" {
				continue // the credit
			}
			answer(string(e.Tx), func(f string) bool {
				_, err := wk.Write([]byte(f + "\n"))
				return err == nil
			})
		}
	}()
	c, err := worker.NewClient(testCtx(t), host, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func items(tx, payload string) string {
	return `{"type":"__iw.items","tx":"` + tx + `","payload":` + payload + `}`
}

// A worker that breaks the batches' rules fails the stream, at once and
// with an error that says why; it never hangs the range.
func TestStreamHostileBatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		window   int
		frames   []string
		items    int    // received before the error
		protocol bool   // errors.Is(err, worker.ErrProtocol)
		want     string // in the error
	}{
		{"malformed", 0, []string{items("s1", `[1,2]`), items("s1", `[3,}`)}, 3, true, "malformed batch"},
		{"not an array", 0, []string{items("s1", `{"a":1}`)}, 0, true, "malformed batch"},
		{"beyond the window", 4, []string{items("s1", `[1,2,3,4,5]`)}, 4, true, "beyond a window of 4"},
		{"an item of another type", 0, []string{items("s1", `[1,"x"]`)}, 1, false, "decoding an item"},
		{"empty batches", 0, []string{items("s1", `[]`), items("s1", `[7]`), `{"type":"stCountResult","tx":"s1","payload":7}`}, 1, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := streamFake(t, &worker.Options{StreamWindow: tc.window}, func(tx string) []string { return tc.frames })
			ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
			defer cancel()
			got, err := collect(worker.Stream(ctx, c, STCount, 10))
			if len(got) != tc.items || errors.Is(err, worker.ErrProtocol) != tc.protocol ||
				(tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%d items, %v", len(got), err)
			}
		})
	}
}

// A worker that sends past the byte window while the range holds an item
// is cut off: what the host keeps for a stream stays bounded, here by
// 2×100 bytes of items and 3 bytes of JSON per item the window allows
// (101): the batch that finds 5 of 101 bytes queued is the last.
func TestStreamFloodIsCutOff(t *testing.T) {
	t.Parallel()
	batch := "[1" + strings.Repeat(",1", 49) + "]" // 50 items, 101 bytes
	first := make(chan struct{})
	c := streamFakeWith(t, &worker.Options{StreamWindowBytes: 100}, func(tx string, write func(string) bool) {
		write(items(tx, "[0]"))
		<-first // the range holds item 0: the batches that follow stay queued
		for range 50 {
			if !write(items(tx, batch)) {
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	var err error
	n := 0
	seq, _ := worker.Stream(ctx, c, STCount, 0)
	for _, err = range seq {
		if err != nil {
			break
		}
		if n++; n == 1 {
			close(first) // the reader goes on pushing what arrives meanwhile
			hsWait(t, c.Done(), "the client to cut the worker off")
		}
	}
	if !errors.Is(err, worker.ErrProtocol) || !strings.Contains(c.Err().Error(), "beyond a window of 100 bytes") || n != 1+300 {
		t.Fatalf("%d items, %v (the client: %v)", n, err, c.Err())
	}
}

// FuzzStreamBatches: a worker sends one batch of anything, then the
// stream's result. The range never hangs or panics, and it yields exactly
// what decoding the batch as a JSON array of ints gives (a batch is an
// array: null is not one), or fails.
func FuzzStreamBatches(f *testing.F) {
	for _, s := range []string{`[1,2,3]`, `[]`, ` [ -1 , 0 ] `, `[1,"x"]`, `[1,}`, `{"a":1}`, `[[1]]`, `[1e3]`, `[null,2]`, `[99999999999999999999]`, `[1,2,3,4,5]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if bytes.ContainsAny(payload, "\n\r") {
			return // not one frame
		}
		const window = 4
		c := streamFake(t, &worker.Options{StreamWindow: window}, func(tx string) []string {
			return []string{items(tx, string(payload)), `{"type":"stCountResult","tx":"` + tx + `","payload":0}`}
		})
		ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
		defer cancel()
		got, err := collect(worker.Stream(ctx, c, STCount, 0))
		if ctx.Err() != nil {
			t.Fatalf("%q: the range hung (%d items, %v)", payload, len(got), err)
		}
		var want []int
		array := bytes.HasPrefix(bytes.TrimLeft(payload, " \t"), []byte("["))
		if array && json.Unmarshal(payload, &want) == nil && len(want) <= window {
			if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%q: got %v, %v; want %v", payload, got, err, want)
			}
		} else if err == nil {
			t.Fatalf("%q: got %v and no error; encoding/json says %v", payload, got, json.Unmarshal(payload, &want))
		}
	})
}
