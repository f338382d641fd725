package upstream

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ConnectTo maps the upstream address a request names (host:port, lower
// case) to the address dialled instead, like curl's --connect-to: TLS still
// sends the request's host as SNI and verifies the certificate against it.
type ConnectTo map[string]string

// ParseConnectTo parses HOST:PORT:ADDR:PORT2 entries (IPv6 addresses in
// brackets); each entry may itself hold several, comma-separated. All four
// parts are required, and a HOST:PORT given twice is an error.
func ParseConnectTo(entries []string) (ConnectTo, error) {
	m := ConnectTo{}
	for _, e := range entries {
		for spec := range strings.SplitSeq(e, ",") {
			if spec = strings.TrimSpace(spec); spec == "" {
				continue
			}
			from, to, err := parseConnectTo(spec)
			if err != nil {
				return nil, err
			}
			if _, dup := m[from]; dup {
				return nil, fmt.Errorf("connect-to %q: %s given twice", spec, from)
			}
			m[from] = to
		}
	}
	return m, nil
}

func parseConnectTo(spec string) (from, to string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("connect-to %q: want HOST:PORT:ADDR:PORT2 (%s)", spec, why)
	}
	rest := spec
	var parts [4]string
	for i := range parts {
		if strings.HasPrefix(rest, "[") && i%2 == 0 {
			end := strings.Index(rest, "]")
			if end < 0 {
				return bad("unclosed [")
			}
			parts[i], rest = rest[1:end], rest[end+1:]
			if i < 3 && !strings.HasPrefix(rest, ":") {
				return bad("':' expected after ]")
			}
			rest = strings.TrimPrefix(rest, ":")
			continue
		}
		if i == 3 {
			parts[i], rest = rest, ""
			break
		}
		j := strings.Index(rest, ":")
		if j < 0 {
			return bad("too few parts")
		}
		parts[i], rest = rest[:j], rest[j+1:]
	}
	if rest != "" {
		return bad("trailing text")
	}
	for i, p := range parts {
		if p == "" {
			return bad("empty part")
		}
		if i%2 == 1 {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
				return bad("bad port " + strconv.Quote(p))
			}
		}
	}
	return net.JoinHostPort(strings.ToLower(parts[0]), parts[1]), net.JoinHostPort(parts[2], parts[3]), nil
}

// dialer wraps dial so that addresses in m are dialled at their target.
func (m ConnectTo) dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if len(m) == 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := m[strings.ToLower(addr)]; ok {
			addr = to
		}
		return dial(ctx, network, addr)
	}
}
