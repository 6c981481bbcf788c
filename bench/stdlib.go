package main

// stdlib-child: the floor for spawn and close. A minimal standard-library
// child that listens on a Unix socket and answers each line with the same
// line; it exits when the connection closes. Only sequential calls make
// sense on it (no ids, no multiplexing, no binary payloads).

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
)

type stdlibClient struct {
	lc *listeningChild
	mu sync.Mutex
	br *bufio.Reader
	wb []byte
}

func spawnStdlib(ctx context.Context) (Client, error) {
	lc, err := startListeningChild("stdlib")
	if err != nil {
		return nil, err
	}
	return &stdlibClient{lc: lc, br: bufio.NewReader(lc.Conn), wb: make([]byte, 0, 64)}, nil
}

func (c *stdlibClient) Ping(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wb = append(append(c.wb[:0], pingMessage...), '\n')
	if _, err := c.lc.Conn.Write(c.wb); err != nil {
		return err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	return checkPing(strings.TrimSuffix(string(line), "\n"))
}

func (c *stdlibClient) Echo(ctx context.Context, p []byte) ([]byte, error) {
	return nil, errors.New("stdlib-child: n/a")
}

func (c *stdlibClient) Close() error { return c.lc.Close() }

func stdlibChild() {
	conn := childListen()
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			os.Exit(0)
		}
		if _, err := conn.Write(line); err != nil {
			os.Exit(0)
		}
	}
}
