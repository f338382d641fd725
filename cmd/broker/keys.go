package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward/brokerclient"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const keysUsage = `Usage: broker keys <command> [NAME|FILE] [flags]

Commands:
  create NAME [--accounts LIST] [--models GLOBS] [--expires 90d]
              [--monthly-premium N] [--monthly-tokens N] [--rpm N]
                  make a key; its secret is printed on stdout, once
  list            every key: name, accounts, models, expiry, last use, state
  update NAME [--accounts LIST] [--models GLOBS] [--expires 90d|never] [--disable|--enable]
              [--monthly-premium N] [--monthly-tokens N] [--rpm N]  (0: no limit)
                  (broker budgets shows what each budget has spent and left)
  revoke NAME     refuse the key on every proxy, for good
  import FILE     turn a proxy keys file (NAME:SECRET[:ACCOUNTS]) into managed
                  keys with the same names, secrets and accounts

The broker is reached at --broker-addr with the admin key from
BROKER_ADMIN_KEY or --admin-key-file (a broker key marked admin:
NAME:SECRET:*:admin in the broker's --keys-file).
`

// adminKeyEnv holds the admin key; a flag would show it in process lists.
const adminKeyEnv = "BROKER_ADMIN_KEY"

// keysConn are the flags every `broker keys` command shares.
type keysConn struct {
	addr, keyFile string
	tls           ops.ClientTLS
	timeout       time.Duration
}

func (c *keysConn) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "broker-addr", "127.0.0.1:50051", "the broker's gRPC address")
	fs.StringVar(&c.keyFile, "admin-key-file", "", "file holding the admin broker key (else the "+adminKeyEnv+" environment variable)")
	fs.BoolVar(&c.tls.Enable, "broker-tls", false, "use TLS to the broker (system roots unless --broker-tls-ca)")
	fs.StringVar(&c.tls.CAFile, "broker-tls-ca", "", "CA certificates (PEM) of the broker's certificate; implies --broker-tls")
	fs.StringVar(&c.tls.CertFile, "broker-tls-cert", "", "client certificate (PEM) for mutual TLS to the broker")
	fs.StringVar(&c.tls.KeyFile, "broker-tls-key", "", "client private key (PEM) for --broker-tls-cert")
	fs.StringVar(&c.tls.ServerName, "broker-tls-server-name", "", "name to verify in the broker's certificate (default: the host of --broker-addr)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "longest a call to the broker may take")
}

// client dials the broker with the admin key.
func (c *keysConn) client(getenv func(string) string) (brokerv1.KeyServiceClient, func(), error) {
	conn, err := c.dial(getenv)
	if err != nil {
		return nil, nil, err
	}
	return brokerv1.NewKeyServiceClient(conn), func() { _ = conn.Close() }, nil
}

// dial connects to the broker with the admin key.
func (c *keysConn) dial(getenv func(string) string) (*grpc.ClientConn, error) {
	key, err := ops.SecretFromEnvOrFile(getenv(adminKeyEnv), c.keyFile, adminKeyEnv, "--admin-key-file", "admin key")
	if err != nil {
		return nil, err
	}
	if key.IsZero() {
		return nil, errors.New("no admin key: set " + adminKeyEnv + " or --admin-key-file (a broker key marked admin: NAME:SECRET:*:admin in the broker's --keys-file)")
	}
	tlsCfg, err := c.tls.Config()
	if err != nil {
		return nil, err
	}
	return brokerclient.Dial(c.addr, key, tlsCfg)
}

// callUsage runs call against the broker's UsageService within --timeout;
// a gRPC error becomes its message, after prefix.
func (c *keysConn) callUsage(ctx context.Context, getenv func(string) string, prefix string, call func(context.Context, brokerv1.UsageServiceClient) error) error {
	cc, err := c.dial(getenv)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := call(ctx, brokerv1.NewUsageServiceClient(cc)); err != nil {
		if st, ok := status.FromError(err); ok {
			return errors.New(prefix + st.Message())
		}
		return fmt.Errorf("%s%w", prefix, err)
	}
	return nil
}

// keyFlags are the policy flags of create and update.
type keyFlags struct {
	accounts, models, expires string
	disable, enable           bool
}

func keysCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return errors.New("keys: no command given")
	}
	cmd, args := args[0], args[1:]
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	var conn keysConn
	var kf keyFlags
	var bf budgetFlags
	fs := flag.NewFlagSet("broker keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn.register(fs)
	wantArg := ""
	switch cmd {
	case "create", "update":
		fs.StringVar(&kf.accounts, "accounts", "", "account, pool a,b,c, or * (default: the proxy's --account)")
		fs.StringVar(&kf.models, "models", "", "model globs the key may use, e.g. gpt-*,claude-sonnet-* (default: every model; \"\" on update: every model)")
		fs.StringVar(&kf.expires, "expires", "", "expiry: a duration (90d, 12h), a date (2027-01-31) or RFC 3339 time; never (update) removes it")
		wantArg = "NAME"
		bf.register(fs)
		if cmd == "update" {
			fs.BoolVar(&kf.disable, "disable", false, "refuse the key until --enable")
			fs.BoolVar(&kf.enable, "enable", false, "accept a disabled key again")
		}
	case "revoke":
		wantArg = "NAME"
	case "import":
		wantArg = "FILE"
	case "list":
	default:
		fmt.Fprint(stderr, keysUsage)
		return fmt.Errorf("keys: unknown command %q", cmd)
	}
	// NAME may come before the flags (broker keys create alice --models ...).
	var pos []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = args[:1], args[1:]
	}
	if err := ops.ParseFlags(fs, "BROKER_KEYS", args, getenv); err != nil {
		return err
	}
	pos = append(pos, fs.Args()...)
	if wantArg == "" && len(pos) > 0 || wantArg != "" && len(pos) != 1 {
		return fmt.Errorf("keys %s: want %s, got %q", cmd, map[bool]string{true: "no arguments", false: "one " + wantArg}[wantArg == ""], pos)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c, closeConn, err := conn.client(getenv)
	if err != nil {
		return fmt.Errorf("keys %s: %w", cmd, err)
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(ctx, conn.timeout)
	defer cancel()
	k := keysRun{c: c, addr: conn.addr, stdout: stdout, stderr: stderr, now: time.Now()}
	switch cmd {
	case "create":
		err = k.create(ctx, pos[0], kf)
	case "update":
		if !bf.onlyBudget(set) {
			err = k.update(ctx, pos[0], kf, set)
		}
	case "revoke":
		err = k.revoke(ctx, pos[0])
	case "import":
		err = k.importFile(ctx, pos[0])
	case "list":
		err = k.list(ctx)
	}
	if err == nil && bf.any(set) {
		err = bf.apply(ctx, &conn, getenv, pos[0], set, stderr)
	}
	if err != nil {
		return fmt.Errorf("keys %s: %w", cmd, err)
	}
	return nil
}

type keysRun struct {
	c              brokerv1.KeyServiceClient
	addr           string
	stdout, stderr io.Writer
	now            time.Time
}

// explain turns a broker error into a sentence that says what to do.
func (k keysRun) explain(err error, name string) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unauthenticated:
		return fmt.Errorf("the broker refused the admin key (%s or --admin-key-file): %s", adminKeyEnv, st.Message())
	case codes.PermissionDenied:
		return errors.New(st.Message())
	case codes.NotFound:
		return fmt.Errorf("no key named %q (broker keys list shows them)", name)
	case codes.AlreadyExists:
		return fmt.Errorf("a key named %q exists already, or its secret is another key's (pick another name, or broker keys update %s)", name, name)
	case codes.InvalidArgument, codes.FailedPrecondition:
		return errors.New(st.Message())
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("cannot reach the broker at %s (--broker-addr): %s", k.addr, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("the broker at %s manages no keys (an older broker, or one started without a state store)", k.addr)
	}
	return err
}

// parseExpiry reads --expires: "90d", a Go duration, a date or an RFC 3339
// time; the zero time means none was given.
func parseExpiry(v string, now time.Time) (time.Time, error) {
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n > 0 {
			return now.AddDate(0, 0, n), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(d), nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--expires %q: want a duration (90d, 12h), a date (2027-01-31) or an RFC 3339 time", v)
}

func splitModels(v string) ([]string, error) {
	m, err := keys.ParseModels(v)
	if err != nil {
		return nil, fmt.Errorf("--models: %w", err)
	}
	return m.Globs(), nil
}

func (k keysRun) create(ctx context.Context, name string, kf keyFlags) error {
	req := &brokerv1.CreateKeyRequest{Name: name, Accounts: kf.accounts}
	var err error
	if req.Models, err = splitModels(kf.models); err != nil {
		return err
	}
	if kf.expires != "" {
		t, err := parseExpiry(kf.expires, k.now)
		if err != nil {
			return err
		}
		req.ExpiresAt = timestamppb.New(t)
	}
	resp, err := k.c.CreateKey(ctx, req)
	if err != nil {
		return k.explain(err, name)
	}
	// The secret alone on stdout, so that it can be piped; the rest on stderr.
	fmt.Fprintln(k.stdout, resp.GetSecret())
	fmt.Fprintf(k.stderr, "created key %q (%s); its secret, above, is shown only this once\n", name, policy(resp.GetKey()))
	return nil
}

func (k keysRun) update(ctx context.Context, name string, kf keyFlags, set map[string]bool) error {
	req := &brokerv1.UpdateKeyRequest{Name: name}
	if set["accounts"] {
		req.Accounts = &kf.accounts
	}
	if set["models"] {
		globs, err := splitModels(kf.models)
		if err != nil {
			return err
		}
		req.Models = &brokerv1.ModelList{Globs: globs}
	}
	if set["expires"] {
		if kf.expires == "never" {
			req.ClearExpiresAt = true
		} else {
			t, err := parseExpiry(kf.expires, k.now)
			if err != nil {
				return err
			}
			req.ExpiresAt = timestamppb.New(t)
		}
	}
	switch {
	case kf.disable && kf.enable:
		return errors.New("--disable and --enable together")
	case kf.disable || kf.enable:
		d := kf.disable
		req.Disabled = &d
	}
	if req.Accounts == nil && req.Models == nil && !set["expires"] && req.Disabled == nil {
		return errors.New("nothing to change: give --accounts, --models, --expires, --disable or --enable")
	}
	resp, err := k.c.UpdateKey(ctx, req)
	if err != nil {
		return k.explain(err, name)
	}
	fmt.Fprintf(k.stdout, "updated key %q (%s)\n", name, policy(resp.GetKey()))
	return nil
}

func (k keysRun) revoke(ctx context.Context, name string) error {
	if _, err := k.c.RevokeKey(ctx, &brokerv1.RevokeKeyRequest{Name: name}); err != nil {
		return k.explain(err, name)
	}
	fmt.Fprintf(k.stdout, "revoked key %q: every proxy refuses it within a second\n", name)
	return nil
}

func (k keysRun) importFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	entries, err := keys.ParseEntries(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var imported, skipped int
	for _, e := range entries {
		_, err := k.c.CreateKey(ctx, &brokerv1.CreateKeyRequest{Name: e.Name, Accounts: e.Accounts.String(), Secret: e.Secret.Reveal()})
		switch {
		case status.Code(err) == codes.AlreadyExists:
			fmt.Fprintf(k.stderr, "skipped %q: a key with that name or secret exists already\n", e.Name)
			skipped++
		case err != nil:
			return fmt.Errorf("%s: key %q: %w (imported %d before it)", path, e.Name, k.explain(err, e.Name), imported)
		default:
			imported++
		}
	}
	fmt.Fprintf(k.stdout, "imported %d keys from %s (%d skipped); clients keep their keys\n", imported, path, skipped)
	return nil
}

func (k keysRun) list(ctx context.Context) error {
	resp, err := k.c.ListKeys(ctx, &brokerv1.ListKeysRequest{})
	if err != nil {
		return k.explain(err, "")
	}
	tw := tabwriter.NewWriter(k.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tACCOUNTS\tMODELS\tEXPIRES\tLAST USED\tSTATE")
	for _, key := range resp.GetKeys() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", key.GetName(), orDash(key.GetAccounts(), "(default)"),
			orDash(strings.Join(key.GetModels(), ","), "*"), when(key.GetExpiresAt(), "never"), when(key.GetLastUsedAt(), "-"), state(key, k.now))
	}
	return tw.Flush()
}

func orDash(v, none string) string {
	if v == "" {
		return none
	}
	return v
}

func when(ts *timestamppb.Timestamp, none string) string {
	if ts == nil {
		return none
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04Z")
}

func state(key *brokerv1.Key, now time.Time) string {
	s := strings.ToLower(strings.TrimPrefix(key.GetState().String(), "KEY_STATE_"))
	if key.GetState() == brokerv1.KeyState_KEY_STATE_ACTIVE && key.GetExpiresAt() != nil && !key.GetExpiresAt().AsTime().After(now) {
		return "expired"
	}
	return s
}

func policy(key *brokerv1.Key) string {
	return fmt.Sprintf("accounts %s, models %s, expires %s", orDash(key.GetAccounts(), "(default)"),
		orDash(strings.Join(key.GetModels(), ","), "*"), when(key.GetExpiresAt(), "never"))
}
