package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/login"
	"github.com/copilot-broker/copilot-broker/internal/ops"
)

// defaultTokenPath is $XDG_CONFIG_HOME/copilot-broker/github-token, or
// ~/.config/... without XDG_CONFIG_HOME.
func defaultTokenPath(getenv func(string) string) string {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if home := getenv("HOME"); home != "" {
			dir = filepath.Join(home, ".config")
		}
	}
	if dir == "" {
		return "github-token"
	}
	return filepath.Join(dir, "copilot-broker", "github-token")
}

func loginCmd(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	cfg := login.Config{}
	var out, account, accountsDir string
	var force bool
	fs := flag.NewFlagSet("broker login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.GitHubURL, "github-url", login.DefaultGitHubURL, "GitHub host for the device flow (GitHub Enterprise Cloud with data residency: https://TENANT.ghe.com)")
	fs.StringVar(&out, "out", defaultTokenPath(getenv), "file to write the GitHub token to (mode 0600)")
	fs.BoolVar(&force, "force", false, "replace --out if it exists")
	fs.StringVar(&account, "account", "", "write the token as this account's file in --accounts-dir instead of --out")
	fs.StringVar(&accountsDir, "accounts-dir", "", "the broker's --accounts-dir (for --account)")
	fs.StringVar(&cfg.ClientID, "client-id", login.DefaultClientID, "OAuth client ID of the device flow")
	if err := ops.ParseFlags(fs, "BROKER_LOGIN", args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("login: unexpected arguments %q", fs.Args())
	}
	serveHint := "--github-token-file " + out
	if account != "" {
		if !keys.ValidAccountName(account) {
			return fmt.Errorf("login: --account %q: want 1-%d letters, digits, '-', '_' or '.', not starting with '.'", account, keys.MaxAccountNameLen)
		}
		if accountsDir == "" {
			return errors.New("login: --account needs --accounts-dir (BROKER_LOGIN_ACCOUNTS_DIR)")
		}
		out = filepath.Join(accountsDir, account)
		serveHint = "--accounts-dir " + accountsDir + "   (account " + account + ")"
	} else if accountsDir != "" {
		return errors.New("login: --accounts-dir needs --account")
	}
	// Refuse before the user goes through the flow, not after.
	if err := login.CheckWritable(out, force); err != nil {
		return err
	}
	cfg.Prompt = func(c login.Code) {
		fmt.Fprintf(stdout, "To authorize the broker, open\n\n    %s\n\nand enter the code\n\n    %s\n\n(the code expires in %s). Waiting for authorization...\n",
			c.VerificationURI, c.UserCode, c.ExpiresIn)
	}
	tok, err := login.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := login.WriteFile(out, tok, force); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Authorized. The GitHub token (fingerprint %s) is in %s (mode 0600).\nStart the broker with:\n\n    broker serve %s\n",
		tok.Fingerprint(), out, serveHint)
	return nil
}
