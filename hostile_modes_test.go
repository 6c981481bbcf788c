package worker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker"
)

// Messages of the "hostile" test worker (see hsWorker).
var (
	// HSMwPanicIn's request makes the worker's incoming middleware panic.
	HSMwPanicIn = worker.Define[string, string]("mwPanicIn")
	// HSMwPanicOut's hsResult makes the worker's outgoing middleware panic.
	HSMwPanicOut = worker.Define[string, string]("mwPanicOut")
	// HSStressAdd adds and counts the calls it handled; HSStressCount reports the count.
	HSStressAdd   = worker.Define[AddReq, AddRes]("stressAdd")
	HSStressCount = worker.Define[worker.Void, int64]("stressCount")
)

// Environment of the "peercred-dial" role.
const (
	hsEnvDialToken = "IW_DIAL_TOKEN" // the Worker.Token of the worker to dial
)

// hsDialReport is what the "peercred-dial" role prints on stdout.
type hsDialReport struct {
	UID     int    `json:"uid"`
	DialErr string `json:"dialErr,omitempty"`
	Reply   string `json:"hsReply,omitempty"` // what the worker answered, if anything
	ReadErr string `json:"readErr,omitempty"`
}

// hsPeercredDialRole is the "peercred-dial" role: it reports, on stdout,
// what hsPeercredDial got.
func hsPeercredDialRole() {
	json.NewEncoder(os.Stdout).Encode(hsPeercredDial())
}

// hsWorker is the usual test worker plus middleware that panics on
// demand and a call counter.
func hsWorker() {
	panicky := func(ctx context.Context, m *worker.Message) error {
		switch {
		case m.Incoming && m.Type == HSMwPanicIn.Name():
			panic("incoming middleware exploded")
		case !m.Incoming && m.Type == HSMwPanicOut.Name()+"Result":
			panic("outgoing middleware exploded")
		}
		return nil
	}
	opts := &worker.ServerOptions{Middleware: []worker.Middleware{panicky}}
	if os.Getenv("IW_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		opts.LogLevel = slog.LevelDebug
	}
	s := worker.NewServer(opts)
	registerHandlers(s)
	var handled atomic.Int64
	worker.Handle(s, HSMwPanicIn, func(ctx context.Context, p string) (string, error) { return "unreachable", nil })
	worker.Handle(s, HSMwPanicOut, func(ctx context.Context, p string) (string, error) { return "ok", nil })
	worker.Handle(s, HSStressAdd, func(ctx context.Context, p AddReq) (AddRes, error) {
		handled.Add(1)
		return AddRes{Sum: p.A + p.B}, nil
	})
	worker.Handle(s, HSStressCount, func(ctx context.Context, _ worker.Void) (int64, error) { return handled.Load(), nil })
	worker.Main(s)
	fmt.Fprintln(os.Stderr, "worker.Main returned in a worker")
	os.Exit(2)
}

// hsPeercredDial connects to the worker named by the token in
// IW_DIAL_TOKEN and presents its secret, so that only the worker's check
// of the peer's uid can refuse it, and reports what happened.
func hsPeercredDial() hsDialReport {
	r := hsDialReport{UID: os.Getuid()}
	raw, err := base64.RawURLEncoding.DecodeString(os.Getenv(hsEnvDialToken))
	var tok struct{ Addr, ID, Secret string }
	if err == nil {
		err = json.Unmarshal(raw, &tok)
	}
	if err != nil {
		r.DialErr = "bad token: " + fmt.Sprint(err)
		return r
	}
	conn, err := net.DialTimeout("unix", tok.Addr, 10*time.Second)
	if err != nil {
		r.DialErr = err.Error()
		return r
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The handshake is recognised by its first bytes: "type" comes first.
	payload, _ := json.Marshal(map[string]any{"protocol": 1, "serializer": "JsonSerializer",
		"secret": tok.Secret, "id": tok.ID, "capabilities": []string{}})
	conn.Write([]byte(`{"type":"__iw.hello","tx":"peercred","payload":` + string(payload) + "}\n"))
	var sb strings.Builder
	buf := make([]byte, 4096)
	// A spawned worker greets first; the reply to the hello comes after.
	const greeting = `{"type":"__iw.greeting","tx":"","payload":{"protocol":1}}` + "\n"
	for !strings.Contains(strings.TrimPrefix(sb.String(), greeting), "\n") {
		n, err := conn.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			r.ReadErr = err.Error()
			break
		}
	}
	r.Reply = sb.String()
	return r
}
