package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Environment variables of the TypeScript protocol.
const (
	EnvStartupData          = "ISOLATED_WORKERS_STARTUP_DATA"
	EnvSocketPath           = "ISOLATED_WORKERS_SOCKET_PATH"
	EnvServerConnectTimeout = "ISOLATED_WORKERS_SERVER_CONNECT_TIMEOUT"
	EnvSerializer           = "ISOLATED_WORKERS_SERIALIZER"
)

// StartupData is what a host hands its worker in EnvStartupData. The first
// four fields are the TypeScript protocol's; the rest are extensions that a
// TypeScript worker ignores.
type StartupData struct {
	Driver               string `json:"driver"`
	SocketPath           string `json:"socketPath"`
	Serializer           string `json:"serializer,omitempty"`
	ServerConnectTimeout int64  `json:"serverConnectTimeout"` // milliseconds; <= 0 disables

	ID       string `json:"id,omitempty"`       // worker identity, checked on attach
	Secret   string `json:"secret,omitempty"`   // per-spawn secret the host presents in its hello
	ReadyFD  int    `json:"readyFd,omitempty"`  // inherited pipe written once listening
	LifeFD   int    `json:"lifeFd,omitempty"`   // inherited pipe whose EOF means the host died
	HostPID  int    `json:"hostPid,omitempty"`  // the spawning host
	Detached bool   `json:"detached,omitempty"` // the worker must outlive its host
	OwnDir   bool   `json:"ownDir,omitempty"`   // the socket's directory is private to it: remove it on exit
	Greet    bool   `json:"greet,omitempty"`    // the host waits for the worker to speak first on each connection
}

// Driver is the only driver the TypeScript worker accepts.
const Driver = "child_process"

// ParseStartup reads the startup data from the environment lookup function,
// falling back to the legacy variables when EnvStartupData is absent.
// It reports ok=false when neither is set.
func ParseStartup(getenv func(string) string) (d StartupData, ok bool, err error) {
	if raw := getenv(EnvStartupData); raw != "" {
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			return d, true, fmt.Errorf("%s is not valid JSON: %w", EnvStartupData, err)
		}
		if d.Driver != Driver {
			return d, true, fmt.Errorf("%s: driver %q is not supported (want %q)", EnvStartupData, d.Driver, Driver)
		}
		if d.SocketPath == "" {
			return d, true, errors.New(EnvStartupData + ": socketPath is empty")
		}
		return d, true, nil
	}
	path := getenv(EnvSocketPath)
	if path == "" {
		return d, false, nil
	}
	d = StartupData{Driver: Driver, SocketPath: path, Serializer: getenv(EnvSerializer), ServerConnectTimeout: 30000}
	if t := getenv(EnvServerConnectTimeout); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return d, true, fmt.Errorf("%s=%q is not a number of milliseconds", EnvServerConnectTimeout, t)
		}
		d.ServerConnectTimeout = ms
	}
	return d, true, nil
}

// Env returns the environment entries that hand d to a worker: the startup
// data and the legacy variables a TypeScript host also sets.
func (d StartupData) Env() []string {
	js, _ := json.Marshal(d) // cannot fail: only strings, ints and bools
	return []string{
		EnvStartupData + "=" + string(js),
		EnvSocketPath + "=" + d.SocketPath,
		EnvServerConnectTimeout + "=" + strconv.FormatInt(d.ServerConnectTimeout, 10),
		EnvSerializer + "=" + d.Serializer,
	}
}
