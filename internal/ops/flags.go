// Package ops holds what both binaries need to be pleasant to operate: flags
// bound to environment variables, logging setup, the guard against listening
// beyond loopback without keys, the admin endpoints and graceful HTTP serving.
package ops

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// EnvName returns the environment variable bound to a flag: the prefix, then
// the flag name upper-cased with '-' as '_' ("grpc-addr" → "BROKER_GRPC_ADDR").
func EnvName(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseFlags sets every flag of fs from its environment variable (see
// [EnvName]) when that is set, then parses args, so a flag given on the
// command line wins over the environment. Flags listed in noEnv are not bound
// (for example a flag that must not be confused with a secret). It also
// installs a usage text that shows each flag's variable and default.
func ParseFlags(fs *flag.FlagSet, prefix string, args []string, getenv func(string) string, noEnv ...string) error {
	skip := map[string]bool{}
	for _, n := range noEnv {
		skip[n] = true
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || skip[f.Name] {
			return
		}
		name := EnvName(prefix, f.Name)
		if v := getenv(name); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s: %w", name, e)
			}
		}
	})
	if err != nil {
		return err
	}
	fs.Usage = func() { PrintUsage(fs.Output(), fs, prefix, skip) }
	return fs.Parse(args)
}

// PrintUsage writes one entry a flag: name, environment variable, default and
// help text.
func PrintUsage(w io.Writer, fs *flag.FlagSet, prefix string, noEnv map[string]bool) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		env := ""
		if !noEnv[f.Name] {
			env = " (env " + EnvName(prefix, f.Name) + ")"
		}
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s%s%s\n      %s\n", f.Name, env, def, f.Usage)
	})
}
