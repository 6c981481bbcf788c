// Command custom-serializer shows the serializers: a user-written one used
// on both sides, the built-in worker.Binary sending raw bytes, and what
// happens when the host and the worker disagree.
//
//	go run ./examples/custom-serializer
package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log"
	"os"
	"os/exec"
	"strings"

	"github.com/isolated-workers/worker"
)

// envSerializer tells the worker process which serializer to use: the
// worker's Server is built before it could learn the host's choice.
const envSerializer = "EXAMPLE_SERIALIZER"

// serializers are the formats this binary can speak, by the name used in
// envSerializer.
var serializers = map[string]worker.Serializer{
	"json":   worker.JSON,
	"binary": worker.Binary,
	"rs":     RecordSeparatorJSON{},
}

func main() {
	worker.Main(newServer(serializers[os.Getenv(envSerializer)])) // in the worker: serves, then exits

	ctx := context.Background()

	// 1. The custom serializer on both sides.
	fmt.Println("== RecordSeparatorJSON on both sides")
	ser := RecordSeparatorJSON{}
	frame := sampleFrame(ser)
	fmt.Printf("a request frame looks like: %q\n", frame)
	w := spawn(ctx, "rs", ser)
	stats, err := worker.Call(ctx, w, ComputeStats, StatsRequest{Values: []float64{1, 2, 3, 4, 5}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("computeStats([1 2 3 4 5]) = %+v\n", stats)
	w.Close()

	// 2. The built-in Binary serializer: CBOR payloads in length-prefixed
	// frames. A []byte payload travels as raw bytes.
	fmt.Println("== worker.Binary on both sides")
	w = spawn(ctx, "binary", worker.Binary)
	data := []byte(strings.Repeat("isolated workers ", 4096))
	sum, err := worker.Call(ctx, w, ComputeChecksum, data)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("computeChecksum(%d bytes) = %+v (local crc32: %d)\n", len(data), sum, crc32.ChecksumIEEE(data))
	stats, err = worker.Call(ctx, w, ComputeStats, StatsRequest{Values: []float64{0.5, 1.5}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("computeStats([0.5 1.5]) = %+v\n", stats)
	w.Close()

	// 3. A mismatch: the host uses Binary, the worker JSON. The host hands
	// the worker its serializer's name at spawn; the worker refuses to
	// start, and Spawn fails.
	fmt.Println("== host worker.Binary, worker worker.JSON")
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envSerializer+"=json")
	w, err = worker.Spawn(ctx, cmd, &worker.Options{Serializer: worker.Binary})
	switch {
	case err == nil:
		w.Close()
		log.Fatal("Spawn succeeded despite the mismatch")
	case errors.Is(err, worker.ErrSerializerMismatch):
		fmt.Println("Spawn failed with worker.ErrSerializerMismatch:", err)
	default:
		fmt.Printf("Spawn failed (errors.Is(err, worker.ErrSerializerMismatch) = false): %v\n", err)
	}
}

// spawn starts a worker using the serializer that name selects, and
// configures the host with ser.
func spawn(ctx context.Context, name string, ser worker.Serializer) *worker.Worker {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envSerializer+"="+name)
	w, err := worker.Spawn(ctx, cmd, &worker.Options{Serializer: ser})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("spawned worker (pid %d) with %s\n", w.Pid(), ser.Name())
	return w
}

// sampleFrame encodes a request the way the connection does, to show the
// format: the payload, then the envelope, then the terminator.
func sampleFrame(ser worker.Serializer) []byte {
	p, _ := ser.AppendPayload(nil, StatsRequest{Values: []float64{1, 2}})
	m := worker.Message{Type: ComputeStats.Name(), Tx: "tx-1", Payload: p}
	b, _ := ser.AppendMessage(nil, &m)
	return append(b, ser.Terminator()...)
}

// newServer is the worker side; ser nil means the default, JSON.
func newServer(ser worker.Serializer) *worker.Server {
	s := worker.NewServer(&worker.ServerOptions{Serializer: ser})
	worker.Handle(s, ComputeStats, func(ctx context.Context, req StatsRequest) (Stats, error) {
		st := Stats{Count: len(req.Values)}
		for _, v := range req.Values {
			st.Sum += v
		}
		if st.Count > 0 {
			st.Mean = st.Sum / float64(st.Count)
		}
		return st, nil
	})
	worker.Handle(s, ComputeChecksum, func(ctx context.Context, data []byte) (Checksum, error) {
		return Checksum{Bytes: len(data), CRC32: crc32.ChecksumIEEE(data)}, nil
	})
	return s
}
