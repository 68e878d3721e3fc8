// Command typecheck type-checks packages and all their dependencies from
// source for other targets, without compiling or linking: the cheap half of
// the cross-builds of test/run.sh. For each GOOS/GOARCH[/GOARM] target it
// asks `go list -deps` which files build there and type-checks them with
// go/types in dependency order. It catches what a build for the target stops
// at before code generation (a file left out by its build tags, a syscall the
// target lacks, an undefined or unused name), not link-time errors.
// Standard-library function bodies are not checked (only their declarations,
// which is all other packages see).
//
// Usage: go run ./test/typecheck [-pkg ./cmd/crpe] linux/arm/7 windows/amd64 ...
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// pkg is what `go list -json` says of a package (the fields used).
type pkg struct {
	ImportPath string
	Dir        string
	Standard   bool
	GoFiles    []string
	CgoFiles   []string
	ImportMap  map[string]string
	Module     *struct{ GoVersion string }
	Error      *struct{ Err string }
}

func main() {
	pattern := flag.String("pkg", "./cmd/crpe", "the packages to check, with their dependencies")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: typecheck [-pkg PATTERN] GOOS/GOARCH[/GOARM]...")
		os.Exit(2)
	}
	// the targets are checked at once, as many as there are CPUs
	type result struct {
		n   int
		err error
	}
	targets := flag.Args()
	results := make([]result, len(targets))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, target := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			n, err := check(target, *pattern)
			results[i] = result{n, err}
		}()
	}
	wg.Wait()
	failed := false
	for i, r := range results {
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", targets[i], r.err)
			failed = true
			continue
		}
		fmt.Printf("type-checked %s (%d packages)\n", targets[i], r.n)
	}
	if failed {
		os.Exit(1)
	}
}

// check type-checks pattern and its dependencies for target and returns how
// many packages it checked.
func check(target, pattern string) (int, error) {
	parts := strings.Split(target, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, fmt.Errorf("want GOOS/GOARCH[/GOARM]")
	}
	env := append(os.Environ(), "GOOS="+parts[0], "GOARCH="+parts[1], "CGO_ENABLED=0")
	if len(parts) == 3 {
		env = append(env, "GOARM="+parts[2])
	}
	var out, errb bytes.Buffer
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Dir,Standard,GoFiles,CgoFiles,ImportMap,Module,Error", pattern)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &errb
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("go list: %v\n%s", err, errb.String())
	}
	sizes := types.SizesFor("gc", parts[1])
	if sizes == nil {
		return 0, fmt.Errorf("no sizes for GOARCH %s", parts[1])
	}
	fset := token.NewFileSet()
	checked := map[string]*types.Package{"unsafe": types.Unsafe}
	var problems []string
	n := 0
	// go list -deps prints every package after its dependencies
	dec := json.NewDecoder(&out)
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return n, fmt.Errorf("go list output: %v", err)
		}
		if p.ImportPath == "unsafe" {
			continue
		}
		if p.Error != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", p.ImportPath, p.Error.Err))
			continue
		}
		if len(p.CgoFiles) > 0 {
			problems = append(problems, fmt.Sprintf("%s: cgo files with CGO_ENABLED=0: %v", p.ImportPath, p.CgoFiles))
			continue
		}
		var files []*ast.File
		for _, f := range p.GoFiles {
			af, err := parser.ParseFile(fset, filepath.Join(p.Dir, f), nil, parser.SkipObjectResolution)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			files = append(files, af)
		}
		conf := types.Config{
			Sizes:            sizes,
			IgnoreFuncBodies: p.Standard,
			Importer:         importer{checked, p.ImportMap},
			Error: func(err error) {
				if len(problems) < 50 {
					problems = append(problems, err.Error())
				}
			},
		}
		if p.Module != nil {
			// as the compiler's -lang: a module without a go line is go1.16
			conf.GoVersion = "go1.16"
			if p.Module.GoVersion != "" {
				conf.GoVersion = "go" + p.Module.GoVersion
			}
		}
		tp, _ := conf.Check(p.ImportPath, fset, files, nil)
		checked[p.ImportPath] = tp
		n++
	}
	if len(problems) > 0 {
		return n, errors.New(strings.Join(problems, "\n"))
	}
	return n, nil
}

// importer finds a package among those already checked, through the
// importing package's ImportMap (vendored standard-library packages).
type importer struct {
	checked   map[string]*types.Package
	importMap map[string]string
}

func (im importer) Import(path string) (*types.Package, error) {
	if p, ok := im.importMap[path]; ok {
		path = p
	}
	if tp := im.checked[path]; tp != nil {
		return tp, nil
	}
	return nil, fmt.Errorf("package %s not checked before its importer", path)
}
