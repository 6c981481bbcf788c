//go:build unix

package worker_test

// Who may talk to a spawned worker: the socket's permissions, the per-spawn
// secret, the worker's identity and (on Linux) the peer's uid.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// hsToken is the content of a Worker.Token.
type hsToken struct {
	Addr   string `json:"addr"`
	ID     string `json:"id"`
	Secret string `json:"secret"`
	Pid    int    `json:"pid"`
}

func hsDecodeToken(t *testing.T, w *worker.Worker) hsToken {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(w.Token())
	var tok hsToken
	if err == nil {
		err = json.Unmarshal(raw, &tok)
	}
	if err != nil || tok.Addr == "" {
		t.Fatalf("cannot read the token: %v", err)
	}
	return tok
}

func (tok hsToken) encode() string {
	b, _ := json.Marshal(tok)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hsDialRaw connects to the worker's socket as a stranger would.
func hsDialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("unix", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// hsReadAll reads until the worker closes the connection.
func hsReadAll(t *testing.T, conn net.Conn) string {
	t.Helper()
	b, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading until the worker closes: %v (read %q)", err, b)
	}
	return string(b)
}

func TestSecuritySocketPermissions(t *testing.T) {
	w := spawn(t, "worker", nil)
	tok := hsDecodeToken(t, w)
	fi, err := os.Lstat(tok.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s has mode %v; want a socket with mode 0600", tok.Addr, fi.Mode())
	}
	di, err := os.Lstat(filepath.Dir(tok.Addr))
	if err != nil {
		t.Fatal(err)
	}
	if !di.IsDir() || di.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory has mode %v; want a directory with mode 0700", di.Mode())
	}
	if st, ok := di.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		t.Fatalf("socket directory is owned by uid %d, not by us (%d)", st.Uid, os.Geteuid())
	}
}

// A connection that speaks the base protocol, without the handshake and
// so without the secret, is closed without an answer; the worker keeps
// serving its host.
func TestSecurityNoSecretRefused(t *testing.T) {
	w := spawn(t, "worker", nil)
	tok := hsDecodeToken(t, w)

	conn := hsDialRaw(t, tok.Addr)
	conn.Write([]byte(`{"type":"ping","tx":"1","payload":{"message":"let me in"}}` + "\n"))
	if got := afterGreeting(t, hsReadAll(t, conn)); got != "" {
		t.Fatalf("the worker answered a host without the secret: %q", got)
	}
	hsStillServes(t, w)

	// The handshake without a secret is refused with a reason.
	_, err := worker.NewClient(testCtx(t), hsDialRaw(t, tok.Addr), nil)
	if !errors.Is(err, worker.ErrUnauthorized) {
		t.Fatalf("NewClient without the secret: %v; want ErrUnauthorized", err)
	}
	hsStillServes(t, w)

	// So is a handshake that is not even JSON.
	conn = hsDialRaw(t, tok.Addr)
	conn.Write([]byte(`{"type":"__iw.hello",` + "\n"))
	if got := afterGreeting(t, hsReadAll(t, conn)); got != "" {
		t.Fatalf("the worker answered a broken handshake: %q", got)
	}
	hsStillServes(t, w)
}

func TestSecurityWrongSecretRefused(t *testing.T) {
	w := spawn(t, "worker", nil)
	tok := hsDecodeToken(t, w)

	conn := hsDialRaw(t, tok.Addr)
	// The handshake is recognised by its first bytes: "type" comes first.
	payload, _ := json.Marshal(map[string]any{"protocol": 1, "serializer": "JsonSerializer", "secret": strings.Repeat("0", len(tok.Secret))})
	conn.Write([]byte(`{"type":"__iw.hello","tx":"h","payload":` + string(payload) + "}\n"))
	got := afterGreeting(t, hsReadAll(t, conn))
	var e struct {
		Type, Tx string
		Payload  wireError
	}
	if err := json.Unmarshal([]byte(got), &e); err != nil || e.Type != "__iw.helloError" || e.Tx != "h" ||
		e.Payload.Code != "E_UNAUTHORIZED" || strings.Contains(got, tok.Secret) {
		t.Fatalf("the worker answered a wrong secret with %q; want one __iw.helloError E_UNAUTHORIZED, then EOF", got)
	}
	hsStillServes(t, w)

	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	bad := tok
	bad.Secret = strings.Repeat("f", len(tok.Secret))
	if _, err := worker.Attach(ctx, bad.encode(), nil); !errors.Is(err, worker.ErrUnauthorized) {
		t.Fatalf("Attach with a wrong secret: %v; want ErrUnauthorized", err)
	}
	// The right secret for another identity is refused too.
	other := tok
	other.ID = "someone-else"
	if _, err := worker.Attach(ctx, other.encode(), nil); !errors.Is(err, worker.ErrUnauthorized) {
		t.Fatalf("Attach with another worker's identity: %v; want ErrUnauthorized", err)
	}
	hsStillServes(t, w)
}

// afterGreeting returns what a spawned worker wrote after its greeting,
// which it writes first on every connection (it tells a host that spawned
// it that it speaks the extensions, and nothing else).
func afterGreeting(t *testing.T, got string) string {
	t.Helper()
	const greeting = `{"type":"__iw.greeting","tx":"","payload":{"protocol":1}}` + "\n"
	rest, ok := strings.CutPrefix(got, greeting)
	if !ok {
		t.Fatalf("the worker did not greet first: %q", got)
	}
	return rest
}
