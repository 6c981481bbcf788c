package worker_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The layers of the module, as the compiler cannot enforce them all (see
// docs/architecture.md): who may import whom, how big the root package and
// its functions may grow.

const module = "github.com/isolated-workers/worker"

// allowedInternal lists, per internal package, the module's packages it may
// import. No internal package imports the root: the root is the public API
// and the protocol engine, built on them.
var allowedInternal = map[string][]string{
	"internal/wire":      nil,
	"internal/hist":      nil,
	"internal/jsonfast":  {"internal/wire"},
	"internal/npipe":     nil,
	"internal/winproc":   nil,
	"internal/transport": {"internal/npipe"},
	"internal/proc":      {"internal/winproc"},
}

// processFiles are the root files that know about processes: the rest of
// the root (Client, Server and what they share) works on any net.Conn.
var processFiles = []string{"worker.go", "spawn.go", "serve.go", "pool.go"}

// processImports are what only processFiles may import.
var processImports = []string{"os/exec", "os/signal", module + "/internal/proc", module + "/internal/transport"}

// imports returns the imports of every Go file in dir (tests included,
// build tags ignored: every OS's files count), by file name.
func imports(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]string)
	for _, f := range files {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[filepath.Base(f)] = append(out[filepath.Base(f)], p)
		}
	}
	return out
}

func TestLayersImportDirection(t *testing.T) {
	skipWithoutSources(t)
	dirs, err := filepath.Glob("internal/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		allowed, known := allowedInternal[filepath.ToSlash(dir)]
		if !known {
			t.Errorf("%s: a new internal package: add it to allowedInternal and docs/architecture.md", dir)
			continue
		}
		for file, imps := range imports(t, dir) {
			for _, imp := range imps {
				rel, ours := strings.CutPrefix(imp, module+"/")
				switch {
				case imp == module:
					t.Errorf("%s/%s imports the root package: internal packages sit below it", dir, file)
				case ours && !slices.Contains(allowed, rel):
					t.Errorf("%s/%s imports %s, which its layer may not (allowed: %v)", dir, file, rel, allowed)
				}
			}
		}
	}
	for file, imps := range imports(t, ".") {
		if strings.HasSuffix(file, "_test.go") || slices.Contains(processFiles, file) {
			continue
		}
		for _, imp := range imps {
			if slices.Contains(processImports, imp) {
				t.Errorf("%s imports %s: only %v may deal with processes; Client and Server work on any net.Conn", file, imp, processFiles)
			}
		}
	}
}

func TestLayersRootStaysSmall(t *testing.T) {
	skipWithoutSources(t)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		n++
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\n//go:build") || strings.HasPrefix(string(b), "//go:build") {
			t.Errorf("%s has a build constraint: OS-specific code belongs in internal/", f)
		}
	}
	if n > 20 {
		t.Errorf("the root package has %d non-test files; at most 20 (move a self-contained mechanism to internal/)", n)
	}
}

// maxFuncLines is the longest a function may be: one that no longer fits
// on a screen is two functions.
const maxFuncLines = 60

func TestLayersFunctionsFitOnAScreen(t *testing.T) {
	skipWithoutSources(t)
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (d.Name() == "testdata" || d.Name() == "bench" || d.Name() == "examples" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		fs := token.NewFileSet()
		f, err := parser.ParseFile(fs, p, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			if fd, ok := decl.(*ast.FuncDecl); ok {
				if n := fs.Position(fd.End()).Line - fs.Position(fd.Pos()).Line + 1; n > maxFuncLines {
					t.Errorf("%s: %s is %d lines; at most %d", p, fd.Name.Name, n, maxFuncLines)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// skipWithoutSources skips where the test binary runs away from the
// module's sources (under Wine, in a scratch directory); the checks read
// the sources of every OS, so one run on Linux covers them.
func skipWithoutSources(t *testing.T) {
	if _, err := os.Stat("go.mod"); err != nil {
		t.Skip("the module's sources are not here:", err)
	}
}
