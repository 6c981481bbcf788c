package worker_test

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// A wrong payload, result or handler type must not compile. Each package
// under testdata/compilefail is built with the go command; "good" must
// build, the others must fail with a type error at the marked call.
func TestContractIsCheckedByTheCompiler(t *testing.T) {
	if runtime.GOOS == "windows" || testing.Short() {
		t.Skip("needs the go command; not run under Wine or -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to check that bad contracts do not compile: %v", err)
	}
	for _, tc := range []struct{ pkg, want string }{
		{"good", ""},
		{"badpayload", "as PingRequest value in argument to worker.Call"},
		{"badresult", "cannot use worker.Call"},
		{"badhandler", "does not match inferred type"},
	} {
		cmd := exec.Command(gobin, "build", "-o", os.DevNull, "./testdata/compilefail/"+tc.pkg)
		out, err := cmd.CombinedOutput()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: should compile: %v\n%s", tc.pkg, err, out)
		case tc.want != "" && err == nil:
			t.Errorf("%s: compiled, but its types are wrong", tc.pkg)
		case tc.want != "" && !strings.Contains(string(out), tc.want):
			t.Errorf("%s: failed for another reason than expected (%q):\n%s", tc.pkg, tc.want, out)
		}
	}
}
