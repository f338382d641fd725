// Command vulncheck reads govulncheck's JSON output (-format json) on stdin
// and decides whether `make lint` passes.
//
// It fails on every vulnerability the code reaches (a symbol-level finding)
// in a module it requires: those are fixed by upgrading the module. A
// reachable vulnerability of the standard library is fixed by the Go
// toolchain, not by this repository's code; it fails too, unless its ID is
// listed in the accepted file (-accepted) with the reason it cannot be fixed
// yet. Accepted findings are printed on every run, and a listed ID that no
// longer shows up is reported so the list can shrink.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

type message struct {
	Config *struct {
		DB             string `json:"db"`
		DBLastModified string `json:"db_last_modified"`
		GoVersion      string `json:"go_version"`
	} `json:"config"`
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

type finding struct {
	id, summary, where, fixed string
	stdlib                    bool
}

func main() {
	accepted := flag.String("accepted", "", "file of accepted standard-library vulnerability IDs, one a line first (# comments)")
	flag.Parse()
	ok, err := run(os.Stdin, os.Stdout, *accepted)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, acceptedPath string) (bool, error) {
	accepted, err := readAccepted(acceptedPath)
	if err != nil {
		return false, err
	}
	summaries := map[string]string{}
	found := map[string]*finding{}
	var order []string
	sawConfig := false
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var m message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return false, fmt.Errorf("reading govulncheck's JSON: %w", err)
		}
		switch {
		case m.Config != nil:
			sawConfig = true
			fmt.Fprintf(out, "vulncheck: database %s (last modified %s), Go %s\n", m.Config.DB, m.Config.DBLastModified, m.Config.GoVersion)
		case m.OSV != nil:
			summaries[m.OSV.ID] = m.OSV.Summary
		case m.Finding != nil && len(m.Finding.Trace) > 0 && m.Finding.Trace[0].Function != "":
			f := m.Finding
			if _, seen := found[f.OSV]; seen {
				continue
			}
			t := f.Trace[0]
			found[f.OSV] = &finding{id: f.OSV, where: t.Package + "@" + t.Version, fixed: f.FixedVersion, stdlib: t.Module == "stdlib"}
			order = append(order, f.OSV)
		}
	}
	if !sawConfig {
		return false, errors.New("no govulncheck output (did it run?)")
	}
	slices.Sort(order)
	pass := true
	for _, id := range order {
		f := found[id]
		f.summary = summaries[id]
		fixed := f.fixed
		if fixed == "" {
			fixed = "no fixed version yet"
		}
		switch reason, ok := accepted[id]; {
		case f.stdlib && ok:
			fmt.Fprintf(out, "ACCEPTED %s %s (fixed in %s): %s [%s]\n", id, f.where, fixed, f.summary, reason)
		case f.stdlib:
			pass = false
			fmt.Fprintf(out, "FAIL %s %s (fixed in Go %s): %s\n  the code reaches it; use a Go toolchain with the fix, or list it in %s with the reason it cannot be used yet\n", id, f.where, fixed, f.summary, acceptedPath)
		default:
			pass = false
			fmt.Fprintf(out, "FAIL %s %s (fixed in %s): %s\n  the code reaches it; upgrade the module\n", id, f.where, fixed, f.summary)
		}
	}
	var stale []string
	for id := range accepted {
		if _, ok := found[id]; !ok {
			stale = append(stale, id)
		}
	}
	slices.Sort(stale)
	for _, id := range stale {
		fmt.Fprintf(out, "note: %s is accepted in %s but no longer found; remove it\n", id, acceptedPath)
	}
	if pass {
		fmt.Fprintf(out, "vulncheck: passed; %d reachable vulnerabilities, all in the accepted list\n", len(order))
	}
	return pass, nil
}

// readAccepted reads "ID reason..." lines; blank lines and # comments are
// skipped.
func readAccepted(path string) (map[string]string, error) {
	acc := map[string]string{}
	if path == "" {
		return acc, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, reason, _ := strings.Cut(line, " ")
		acc[id] = strings.TrimSpace(reason)
	}
	return acc, nil
}
