//go:build tools

package worker

import (
	_ "github.com/Microsoft/go-winio"
	_ "github.com/fxamacker/cbor/v2"
	_ "golang.org/x/sys/unix"
)
