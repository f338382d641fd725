package ops

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// exposedBits are the permission bits a file holding a secret should not
// have: any access by others, and write by the group. Group read is
// accepted: Kubernetes mounts Secret volumes 0440 with the pod's fsGroup as
// the group, and this project's manifests do so.
const exposedBits fs.FileMode = 0o027

// CheckSecretFile reports an error naming the file and its mode when a file
// holding a secret (keys, a token) is readable or writable beyond its owner
// and group, or writable by its group.
func CheckSecretFile(path string) error {
	fi, err := os.Stat(path) // follows symlinks, as the read does (Kubernetes' ..data links)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&exposedBits != 0 {
		return fmt.Errorf("%s holds a secret but has mode %#o (readable or writable by others, or writable by its group): chmod 600 or 640", path, m)
	}
	return nil
}

// WarnSecretFiles logs a warning for each of paths (empty ones skipped)
// that [CheckSecretFile] finds exposed.
func WarnSecretFiles(log *slog.Logger, paths ...string) {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := CheckSecretFile(p); err != nil {
			log.Warn("secret file permissions", "error", err)
		}
	}
}

// SecretFromEnvOrFile returns a secret given in the environment variable
// envName (value env) or in a file (--flagName): setting both is a mistake
// worth reporting rather than guessing; an empty file is an error; neither
// gives the zero secret. what names the secret in errors ("broker key").
func SecretFromEnvOrFile(env, file, envName, flagName, what string) (secret.Secret, error) {
	switch {
	case env != "" && file != "":
		return secret.Secret{}, fmt.Errorf("set either %s or %s, not both", envName, flagName)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return secret.Secret{}, fmt.Errorf("%s: %w", what, err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return secret.Secret{}, fmt.Errorf("%s file %s is empty", what, file)
		}
		return secret.New(k), nil
	}
	return secret.New(strings.TrimSpace(env)), nil
}
