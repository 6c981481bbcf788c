// Command baselinegen prepares the library at an older revision (the
// baseline) for being measured in the same bench run as the current library.
// It is run by ../../baseline.sh, which exports the revision with git archive;
// see bench/README.md.
//
// Two versions of one module path cannot be linked into one binary, so:
//
//	baselinegen module -old PATH -new PATH DIR
//
// rewrites every import of PATH and PATH/... in the .go files under DIR to
// the new module path (go.mod itself is rewritten by `go mod edit -module`),
// and
//
//	baselinegen lib -old PATH -new PATH -rev REV -bench DIR -in LIB.go -out FILE.go
//
// turns the revision's own bench/lib.go (written against the revision's API)
// into a file of the current bench package: it imports the new path under
// the old package name, its top-level identifiers get a "base" prefix, the
// subject IDs and child roles a "base-" prefix instead of "worker-", and the
// subject names a " @REV" suffix, so that nothing collides with the current
// lib.go. Identifiers it uses but does not declare (Subject, subjects,
// childRoles, childCmd, ...) are taken from the current bench package; one
// that the current library's own files declare is refused, since it would
// silently bind the baseline to the current library's code.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "module":
		err = cmdModule(os.Args[2:])
	case "lib":
		err = cmdLib(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "baselinegen:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: baselinegen module -old PATH -new PATH DIR\n       baselinegen lib -old PATH -new PATH -rev REV -bench DIR -in LIB.go -out FILE.go")
	os.Exit(2)
}

func cmdModule(args []string) error {
	fs := flag.NewFlagSet("module", flag.ExitOnError)
	oldPath := fs.String("old", "", "module path to replace")
	newPath := fs.String("new", "", "new module path")
	fs.Parse(args)
	if *oldPath == "" || *newPath == "" || fs.NArg() != 1 {
		usage()
	}
	return rewriteModule(fs.Arg(0), *oldPath, *newPath)
}

// rewriteModule replaces the quoted import paths "old" and "old/... in
// every .go file under dir. Only whole quoted paths are matched, so
// "old-something" and "old.suffix" are left alone.
func rewriteModule(dir, oldPath, newPath string) error {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		nb := bytes.ReplaceAll(b, []byte(strconv.Quote(oldPath)), []byte(strconv.Quote(newPath)))
		nb = bytes.ReplaceAll(nb, []byte(`"`+oldPath+`/`), []byte(`"`+newPath+`/`))
		if bytes.Equal(b, nb) {
			return nil
		}
		n++
		return os.WriteFile(p, nb, 0o644)
	})
	if err == nil && n == 0 {
		err = fmt.Errorf("no .go file under %s imports %s", dir, oldPath)
	}
	return err
}

func cmdLib(args []string) error {
	fs := flag.NewFlagSet("lib", flag.ExitOnError)
	oldPath := fs.String("old", "", "the library's module path as the revision's lib.go imports it")
	newPath := fs.String("new", "", "the baseline's module path")
	rev := fs.String("rev", "", "revision label appended to the subject names")
	benchDir := fs.String("bench", "", "the current bench package (to refuse names of the current library's files)")
	in := fs.String("in", "", "the revision's bench/lib.go")
	out := fs.String("out", "", "file to write")
	fs.Parse(args)
	if *oldPath == "" || *newPath == "" || *rev == "" || *benchDir == "" || *in == "" || *out == "" || fs.NArg() != 0 {
		usage()
	}
	src, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	avoid, err := currentLibNames(*benchDir, *oldPath, *out)
	if err != nil {
		return err
	}
	gen, err := genLib(src, *oldPath, *newPath, *rev, avoid)
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	return os.WriteFile(*out, gen, 0o644)
}

// currentLibNames returns the top-level names declared by the files of the
// current bench package that import the library (lib.go today).
func currentLibNames(dir, libPath, skip string) (map[string]bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if filepath.Base(f) == filepath.Base(skip) || strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		if !importsLib(af, libPath) {
			continue
		}
		for _, d := range topLevel(af) {
			names[d.Name] = true
		}
	}
	return names, nil
}

func importsLib(f *ast.File, libPath string) bool {
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if p == libPath || strings.HasPrefix(p, libPath+"/") {
			return true
		}
	}
	return false
}

// topLevel returns the identifiers declared at package level by f, except
// init and _ (methods are not package-level names).
func topLevel(f *ast.File) []*ast.Ident {
	var ids []*ast.Ident
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				ids = append(ids, d.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.ValueSpec:
					ids = append(ids, s.Names...)
				case *ast.TypeSpec:
					ids = append(ids, s.Name)
				}
			}
		}
	}
	return slices.DeleteFunc(ids, func(id *ast.Ident) bool { return id.Name == "init" || id.Name == "_" })
}

func genLib(src []byte, oldPath, newPath, rev string, avoid map[string]bool) ([]byte, error) {
	fset := token.NewFileSet()
	// Object resolution (the default) links each identifier to the
	// declaration in this file it refers to, if any.
	f, err := parser.ParseFile(fset, "lib.go", src, parser.ParseComments)
	if err != nil {
		return nil, err
	}

	// The import: the new path under the package name the code uses.
	found := false
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		switch {
		case p == oldPath:
			if imp.Name == nil {
				imp.Name = ast.NewIdent(path.Base(oldPath))
			}
			imp.Path.Value = strconv.Quote(newPath)
			found = true
		case strings.HasPrefix(p, oldPath+"/"):
			if imp.Name == nil {
				imp.Name = ast.NewIdent(path.Base(p))
			}
			imp.Path.Value = strconv.Quote(newPath + strings.TrimPrefix(p, oldPath))
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("does not import %s", oldPath)
	}

	// Names it uses from the rest of the package must not be the current
	// library's.
	for _, id := range f.Unresolved {
		if avoid[id.Name] {
			return nil, fmt.Errorf("uses %s, which it does not declare and the current bench's library file does", id.Name)
		}
	}

	// Top-level identifiers: libPing -> baseLibPing, everywhere they are
	// referred to. Struct field keys (Subject{Name: ...}) are never renamed:
	// the parser may link them to a same-named top-level object.
	renamed := map[*ast.Object]string{}
	for _, id := range topLevel(f) {
		if id.Obj != nil {
			renamed[id.Obj] = "base" + upperFirst(id.Name)
		}
	}
	fieldKeys := map[*ast.Ident]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if cl, ok := n.(*ast.CompositeLit); ok {
			if _, isMap := cl.Type.(*ast.MapType); !isMap {
				for _, e := range cl.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok {
							fieldKeys[k] = true
						}
					}
				}
			}
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id.Obj != nil && !fieldKeys[id] {
			if nn, ok := renamed[id.Obj]; ok {
				id.Name = nn
			}
		}
		return true
	})

	// Subject IDs (Subject{ID: "..."}) and child roles (childRoles["..."]):
	// every string literal equal to one of them gets the new prefix.
	ids := map[string]string{}
	newID := func(s string) string { return "base-" + strings.TrimPrefix(s, "worker-") }
	var names []*ast.BasicLit
	nIDs, nRoles := 0, 0
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			if t, ok := n.Type.(*ast.Ident); !ok || t.Name != "Subject" {
				return true
			}
			for _, e := range n.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				k, _ := kv.Key.(*ast.Ident)
				v, _ := kv.Value.(*ast.BasicLit)
				if k == nil || v == nil || v.Kind != token.STRING {
					continue
				}
				s, _ := strconv.Unquote(v.Value)
				switch k.Name {
				case "ID":
					ids[s] = newID(s)
					nIDs++
				case "Name":
					names = append(names, v)
				}
			}
		case *ast.IndexExpr:
			if x, ok := n.X.(*ast.Ident); ok && x.Name == "childRoles" {
				if v, ok := n.Index.(*ast.BasicLit); ok && v.Kind == token.STRING {
					s, _ := strconv.Unquote(v.Value)
					ids[s] = newID(s)
					nRoles++
				}
			}
		}
		return true
	})
	if nIDs == 0 || nRoles == 0 {
		return nil, errors.New(`found no Subject{ID: "..."} literal or no childRoles["..."] assignment`)
	}
	seen := map[string]string{}
	for o, n := range ids {
		if p, dup := seen[n]; dup {
			return nil, fmt.Errorf("IDs %q and %q both become %q", p, o, n)
		}
		seen[n] = o
	}
	for _, v := range names {
		s, _ := strconv.Unquote(v.Value)
		v.Value = strconv.Quote(s + " @" + rev)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.BasicLit); ok && v.Kind == token.STRING {
			if s, err := strconv.Unquote(v.Value); err == nil {
				if n, ok := ids[s]; ok {
					v.Value = strconv.Quote(n)
				}
			}
		}
		return true
	})

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "// Code generated by bench/baseline.sh from bench/lib.go at %s; DO NOT EDIT.\n\n", rev)
	if err := format.Node(&buf, fset, f); err != nil {
		return nil, err
	}
	return format.Source(buf.Bytes())
}

func upperFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}
