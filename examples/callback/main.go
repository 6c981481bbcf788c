// Command callback shows a worker calling its host back from a handler,
// with worker.Call(ctx, worker.Host(ctx), ...), to get what it must not
// or cannot get by itself:
//
//   - a secret the worker must not read from disk (a signing key), which
//     the host hands out one call at a time;
//   - its input, pulled chunk by chunk: the way to send a sequence from
//     the host to a worker, at the worker's own pace;
//   - an error from the host's handler, which reaches the worker's handler
//     and, through it, the host's original call, its code intact;
//   - a host that has no handler for the call (worker.ErrUnknownMessage).
//
// The host serves these calls with the handlers of a worker.Server of its
// own, passed as Options.Handlers.
//
//	go run ./examples/callback
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"

	"github.com/isolated-workers/worker"
)

// The contract: messages the host sends to the worker ...
var (
	// Sign returns the HMAC-SHA256 of Data with the host's key KeyName.
	Sign = worker.Define[SignRequest, string]("sign")
	// CountWords counts the words of the host's document of that name.
	CountWords = worker.Define[string, Counts]("countWords")
)

// ... and messages the worker sends to its host.
var (
	// GetSecret returns the secret of that name.
	GetSecret = worker.Define[string, string]("getSecret")
	// NextChunk returns a chunk of a document; the worker asks for the
	// next one until EOF.
	NextChunk = worker.Define[ChunkRequest, Chunk]("nextChunk")
)

// ErrNoSuchSecret is the host's error for a secret it does not have. Its
// code travels with it, through the worker and back: the host's original
// call matches it with errors.Is.
var ErrNoSuchSecret = worker.NewError("E_NO_SUCH_SECRET", "no such secret")

type SignRequest struct {
	KeyName string `json:"keyName"`
	Data    string `json:"data"`
}

type ChunkRequest struct {
	Doc   string `json:"doc"`
	Index int    `json:"index"`
}

type Chunk struct {
	Text string `json:"text"`
	EOF  bool   `json:"eof"`
}

type Counts struct {
	Chunks int `json:"chunks"`
	Words  int `json:"words"`
}

func main() {
	worker.Main(newWorkerServer()) // in the worker: serves, then exits

	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	w, err := worker.Spawn(ctx, exec.Command(exe), &worker.Options{Handlers: newHostServer()})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	// A secret fetched from the host.
	sig, err := worker.Call(ctx, w, Sign, SignRequest{KeyName: "release-key", Data: "v1.2.3"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("sign(v1.2.3) = %s… (the worker fetched release-key from the host)\n", sig[:16])

	// A document pulled chunk by chunk.
	c, err := worker.Call(ctx, w, CountWords, "poem")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("countWords(poem) = %d words in %d chunks, pulled one by one\n", c.Words, c.Chunks)

	// The host's error, through the worker, back to the host.
	_, err = worker.Call(ctx, w, Sign, SignRequest{KeyName: "nope", Data: "v1.2.3"})
	fmt.Printf("sign with key nope: %v\n  errors.Is(err, ErrNoSuchSecret) = %v\n", err, errors.Is(err, ErrNoSuchSecret))

	// A host without the handler: this one serves nothing (no
	// Options.Handlers), so the worker's call to it fails.
	bare, err := worker.Spawn(ctx, exec.Command(exe), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bare.Close()
	_, err = worker.Call(ctx, bare, CountWords, "poem")
	fmt.Printf("countWords on a host without handlers: %v\n  errors.Is(err, worker.ErrUnknownMessage) = %v\n",
		err, errors.Is(err, worker.ErrUnknownMessage))
}

// newHostServer is the host's side of the calls back: it holds the
// secrets and the documents, and the worker never sees more than it asks
// for.
func newHostServer() *worker.Server {
	secrets := map[string]string{"release-key": "s3cr3t, never on the worker's disk"}
	docs := map[string][]string{"poem": {
		"so much depends upon ",
		"a red wheel barrow ",
		"glazed with rain water ",
		"beside the white chickens",
	}}

	s := worker.NewServer(nil)
	worker.Handle(s, GetSecret, func(ctx context.Context, name string) (string, error) {
		secret, ok := secrets[name]
		if !ok {
			return "", fmt.Errorf("%q: %w", name, ErrNoSuchSecret)
		}
		return secret, nil
	})
	worker.Handle(s, NextChunk, func(ctx context.Context, r ChunkRequest) (Chunk, error) {
		doc, ok := docs[r.Doc]
		if !ok {
			return Chunk{}, fmt.Errorf("no document %q", r.Doc)
		}
		if r.Index >= len(doc) {
			return Chunk{EOF: true}, nil
		}
		return Chunk{Text: doc[r.Index]}, nil
	})
	return s
}

// newWorkerServer is the worker: its handlers call the host that sent
// their request through worker.Host(ctx).
func newWorkerServer() *worker.Server {
	s := worker.NewServer(nil)
	worker.Handle(s, Sign, func(ctx context.Context, r SignRequest) (string, error) {
		key, err := worker.Call(ctx, worker.Host(ctx), GetSecret, r.KeyName)
		if err != nil {
			// Wrapped with %w, the host's error keeps its code on the way
			// back to the original caller.
			return "", fmt.Errorf("fetching the signing key: %w", err)
		}
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte(r.Data))
		return hex.EncodeToString(mac.Sum(nil)), nil
	})
	worker.Handle(s, CountWords, func(ctx context.Context, doc string) (Counts, error) {
		// The pull pattern: one call per chunk, made when the worker is
		// ready for it, so the host never sends more than the worker
		// takes (flow control by construction) and a document of any size
		// never needs to fit in one message.
		var c Counts
		for {
			chunk, err := worker.Call(ctx, worker.Host(ctx), NextChunk, ChunkRequest{Doc: doc, Index: c.Chunks})
			if errors.Is(err, worker.ErrUnknownMessage) {
				return Counts{}, fmt.Errorf("this host does not serve documents: %w", err)
			}
			if err != nil {
				return Counts{}, err
			}
			if chunk.EOF {
				return c, nil
			}
			c.Chunks++
			c.Words += len(strings.Fields(chunk.Text))
		}
	})
	return s
}
