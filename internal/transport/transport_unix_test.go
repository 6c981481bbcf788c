//go:build unix

package transport

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestListenDialCheckPeerRemove(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	path, dir, err := NewPath()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if filepath.Dir(path) != dir || len(path) > maxSocketPath {
		t.Fatalf("path %q is not a short path in %q", path, dir)
	}
	// A stale socket left by a dead worker is replaced.
	stale, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v; want mode 0600", fi.Mode(), err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = CheckPeer(c)
			c.Close()
		}
		accepted <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("CheckPeer on a connection from this process: %v", err)
	}
	ln.Close() // removes the socket file
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

func TestListenAndRemoveSpareOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen replaced a regular file")
	}
	Remove(path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Remove removed a regular file: %v", err)
	}
}

func TestCheckPeerPassesOtherConns(t *testing.T) {
	if err := CheckPeer(nil); err != nil {
		t.Fatalf("CheckPeer(nil conn): %v", err)
	}
}
