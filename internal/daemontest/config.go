package daemontest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Token is the API token WriteAPIPair configures.
const Token = "test-token-0123456789"

// APIPair is a config joining two API connectors, "in" and "out", by one
// route per chat: in/chatN ↔ out/chatN.
type APIPair struct {
	Path    string // the config file
	InAddr  string
	OutAddr string
	Chats   []string
}

// WriteAPIPair writes an APIPair config with chats routes into dir; extra
// is appended under the top level (e.g. "log:\n  level: debug\n").
func WriteAPIPair(t testing.TB, dir string, chats int, extra string) APIPair {
	t.Helper()
	p := APIPair{
		Path:    filepath.Join(dir, "phonebridge.yaml"),
		InAddr:  fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		OutAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
	}
	var b strings.Builder
	fmt.Fprintf(&b, `state_dir: ./state
delivery:
  retry_min: 50ms
  retry_max: 1s
connectors:
  in:
    type: api
    listen: %s
    token: %s
  out:
    type: api
    listen: %s
    token: %s
routes:
`, p.InAddr, Token, p.OutAddr, Token)
	for i := 0; i < chats; i++ {
		chat := "general"
		if i > 0 {
			chat = fmt.Sprintf("chat%d", i)
		}
		p.Chats = append(p.Chats, chat)
		fmt.Fprintf(&b, "  - name: %s\n    endpoints:\n      - {connector: in, chat: %s}\n      - {connector: out, chat: %s}\n", chat, chat, chat)
	}
	b.WriteString(extra)
	if err := os.WriteFile(p.Path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
