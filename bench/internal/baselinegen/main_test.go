package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	oldMod = "github.com/isolated-workers/worker"
	newMod = "github.com/isolated-workers/worker-baseline"
)

// TestGenLib rewrites the current bench/lib.go as baseline.sh would and
// checks that nothing in it can collide with the file it came from.
func TestGenLib(t *testing.T) {
	src, err := os.ReadFile("../../lib.go")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := genLib(src, oldMod, newMod, "abc1234", nil)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	orig, err := parser.ParseFile(fset, "lib.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(fset, "lib_baseline.go", gen, 0)
	if err != nil {
		t.Fatalf("%v\n%s", err, gen)
	}

	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == oldMod || strings.HasPrefix(p, oldMod+"/") {
			t.Errorf("still imports %s", p)
		}
	}
	origNames := map[string]bool{}
	for _, id := range topLevel(orig) {
		origNames[id.Name] = true
	}
	for _, id := range topLevel(f) {
		if origNames[id.Name] || !strings.HasPrefix(id.Name, "base") {
			t.Errorf("top-level name %s not renamed", id.Name)
		}
	}
	origStrings := stringLits(orig)
	names := 0
	ast.Inspect(f, func(n ast.Node) bool {
		if cl, ok := n.(*ast.CompositeLit); ok {
			if id, ok := cl.Type.(*ast.Ident); ok && id.Name == "Subject" {
				for _, e := range cl.Elts {
					kv := e.(*ast.KeyValueExpr)
					v, ok := kv.Value.(*ast.BasicLit)
					if !ok {
						continue
					}
					s, _ := strconv.Unquote(v.Value)
					switch kv.Key.(*ast.Ident).Name {
					case "ID":
						if origStrings[s] || !strings.HasPrefix(s, "base-") {
							t.Errorf("ID %q", s)
						}
					case "Name":
						names++
						if !strings.HasSuffix(s, " @abc1234") {
							t.Errorf("Name %q", s)
						}
					}
				}
			}
		}
		if ix, ok := n.(*ast.IndexExpr); ok {
			if x, ok := ix.X.(*ast.Ident); ok && x.Name == "childRoles" {
				s, _ := strconv.Unquote(ix.Index.(*ast.BasicLit).Value)
				if origStrings[s] {
					t.Errorf("child role %q not renamed", s)
				}
			}
		}
		return true
	})
	if names == 0 {
		t.Errorf("no Subject names in\n%s", gen)
	}
}

func stringLits(f *ast.File) map[string]bool {
	m := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.BasicLit); ok && v.Kind == token.STRING {
			s, _ := strconv.Unquote(v.Value)
			m[s] = true
		}
		return true
	})
	return m
}

// TestGenLibRefusesCurrentNames: a name the revision's lib.go uses without
// declaring it must not bind to the current library file's declaration.
func TestGenLibRefusesCurrentNames(t *testing.T) {
	src := `package main

import "github.com/isolated-workers/worker"

func init() {
	subjects = append(subjects, Subject{Name: "w", ID: "worker-x", Spawn: spawnX})
	childRoles["worker-x"] = func() { helper(worker.X) }
}

func spawnX() {}
`
	if _, err := genLib([]byte(src), oldMod, newMod, "r", map[string]bool{"helper": true}); err == nil || !strings.Contains(err.Error(), "helper") {
		t.Fatalf("err = %v, want a refusal of helper", err)
	}
	gen, err := genLib([]byte(src), oldMod, newMod, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`worker "` + newMod + `"`, `ID: "base-x"`, `childRoles["base-x"]`, `Spawn: baseSpawnX`, `func baseSpawnX()`, `helper(worker.X)`} {
		if !strings.Contains(string(gen), want) {
			t.Errorf("missing %s in\n%s", want, gen)
		}
	}
}

func TestRewriteModule(t *testing.T) {
	dir := t.TempDir()
	src := `package x

import (
	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
	"github.com/isolated-workers/workerpool"
)
`
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rewriteModule(dir, oldMod, newMod); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "x.go"))
	want := strings.NewReplacer(`worker"`, `worker-baseline"`, `worker/internal`, `worker-baseline/internal`).Replace(src)
	if string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
}
