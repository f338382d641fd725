package server

import (
	"slices"

	"github.com/copilot-broker/copilot-broker/internal/forward"
)

// keyAccounts is what the keys file asks of the broker client.
type keyAccounts struct {
	targets     map[string]forward.Target
	needDefault bool     // some key has no third field (or there are no keys)
	named       []string // accounts named by keys, sorted
	all         bool     // some key is a '*' pool
}

// accountsOf reads the keys' third fields: one account, a pool of several,
// or '*'. Keys without one use --account.
func accountsOf(cfg Config) keyAccounts {
	ka := keyAccounts{targets: map[string]forward.Target{}}
	if cfg.Keys.Len() == 0 {
		ka.needDefault = true
		return ka
	}
	seen := map[string]bool{}
	for _, k := range cfg.Keys.Keys() {
		a := k.Accounts
		switch {
		case !a.Specified():
			ka.needDefault = true
		case a.All():
			ka.all = true
			ka.targets[k.Name] = forward.Target{All: true}
		default:
			names := a.Names()
			ka.targets[k.Name] = forward.Target{Accounts: names}
			for _, n := range names {
				if !seen[n] {
					seen[n] = true
					ka.named = append(ka.named, n)
				}
			}
		}
	}
	slices.Sort(ka.named)
	return ka
}
