package irc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

func parseSection(t *testing.T, section string) (*Options, error) {
	t.Helper()
	cfg, err := config.Parse([]byte("state_dir: ./state\nconnectors:\n  libera:\n    type: irc\n"+section), filepath.Join(t.TempDir(), "phonebridge.yaml"))
	if err != nil {
		return nil, err
	}
	return cfg.Connectors["libera"].Options.(*Options), nil
}

func TestOptionsDefaults(t *testing.T) {
	if _, ok := bridge.LookupType("irc"); !ok {
		t.Fatal("type irc is not registered")
	}
	o, err := parseSection(t, `    server: irc.libera.chat:6697
    nick: wabridge
    sasl:
      mechanism: plain
      password: hunter2hunter2
`)
	if err != nil {
		t.Fatal(err)
	}
	want := NewOptions()
	if !o.TLS || !o.ZeroWidthNames || o.NickColors || o.MaxLines != want.MaxLines || o.SenderFormat != DefaultSenderFormat ||
		o.Flood != want.Flood || o.PingInterval != DefaultPingInterval || o.PingTimeout != DefaultPingTimeout || o.ShowJoins || o.ShowDeletes || o.RealName != DefaultRealName {
		t.Errorf("defaults not applied: %+v", o)
	}
}

func TestOptionsSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "libera-password"), []byte("hunter2hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`state_dir: ./state
connectors:
  libera:
    type: irc
    server: irc.libera.chat:6697
    nick: wabridge
    sasl:
      mechanism: plain
      password_file: libera-password
`), filepath.Join(dir, "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Connectors["libera"].Options.(*Options).SASL.Password; got != "hunter2hunter2" {
		t.Errorf("sasl.password_file gave %q", got)
	}
}

func TestOptionsProblemsNameTheirPath(t *testing.T) {
	for _, tc := range []struct {
		section string
		want    []string
	}{
		{"    nick: wabridge\n", []string{"connectors.libera.server: is required"}},
		{"    server: irc.libera.chat\n    nick: wabridge\n", []string{"connectors.libera.server: \"irc.libera.chat\" is not host:port"}},
		{"    server: irc.libera.chat:6697\n", []string{"connectors.libera.nick: is required"}},
		{"    server: irc.libera.chat:6697\n    nick: 9lives\n", []string{"connectors.libera.nick: \"9lives\" is not a valid IRC nick"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    nik: x\n", []string{"connectors.libera.nik: unknown key"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sasl:\n      mechanism: scram\n", []string{"connectors.libera.sasl.mechanism: \"scram\" is not one of plain, external"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sasl:\n      mechanism: plain\n", []string{"connectors.libera.sasl.password: is required"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sasl:\n      mechanism: external\n", []string{"connectors.libera.sasl.mechanism: external authenticates with the client certificate"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sasl:\n      user: me\n", []string{"connectors.libera.sasl.mechanism: is empty"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sasl:\n      mechansim: plain\n", []string{"connectors.libera.sasl.mechansim: unknown key"}},
		{"    server: irc.libera.chat:6667\n    nick: wabridge\n    tls: false\n    sasl:\n      mechanism: plain\n      password: hunter2hunter2\n",
			[]string{"connectors.libera.sasl.password: would be sent to irc.libera.chat unencrypted"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    tls: false\n    tls_insecure: true\n", []string{"connectors.libera.tls_insecure: needs tls: true"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    tls_fingerprint: abc\n", []string{"connectors.libera.tls_fingerprint: \"abc\" is not a SHA-256 fingerprint"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    client_cert: bot.pem\n", []string{"connectors.libera.client_key: client_cert and client_key go together"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    channel_keys:\n      general: k\n      \"#ok\": \"two words\"\n",
			[]string{"connectors.libera.channel_keys.#ok: a channel key is one word", "connectors.libera.channel_keys.general: \"general\" is not a channel name"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    flood:\n      burst: 0\n      rate: 0\n",
			[]string{"connectors.libera.flood.burst: must be at least 1", "connectors.libera.flood.rate: must be more than 0"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    flood:\n      rate: fast\n", []string{"connectors.libera.flood.rate: expected a number"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sender_format: \"<{name}>\"\n", []string{"connectors.libera.sender_format: must contain {text} exactly once"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    sender_format: \"<{nick}> {text}\"\n", []string{"connectors.libera.sender_format: has unknown placeholder {nick}"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    ping_interval: 0s\n    ping_timeout: 500ms\n",
			[]string{"connectors.libera.ping_interval: must be at least 1s (got 0s)", "connectors.libera.ping_timeout: must be at least 1s (got 500ms)"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    max_lines: -1\n", []string{"connectors.libera.max_lines: must be 0 (unlimited) or more"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    mode: puppets\n", []string{"connectors.libera.mode: \"puppets\" is not one of relay, puppet"}},
		{"    server: irc.libera.chat:6697\n    nick: wabridge\n    mode: puppet\n    puppets:\n      suffix: \"(wa)\"\n      max: 0\n      idle_timeout: 10ms\n",
			[]string{"connectors.libera.puppets.suffix: \"(wa)\" must be at most 8 nick characters", "connectors.libera.puppets.max: must be at least 1", "connectors.libera.puppets.idle_timeout: must be at least 1s"}},
	} {
		_, err := parseSection(t, tc.section)
		if err == nil {
			t.Errorf("%s: accepted", tc.section)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant %q", tc.section, err, w)
			}
		}
	}
}

func TestOptionsAcceptValidSetups(t *testing.T) {
	for _, section := range []string{
		// Plain text to a server on this machine, with a password: fine.
		"    server: 127.0.0.1:6667\n    nick: wabridge\n    tls: false\n    password: serverpass\n",
		"    server: irc.example.org:6697\n    nick: wa[bridge]\n    client_cert: bot.pem\n    client_key: bot.key\n    sasl:\n      mechanism: external\n",
		"    server: irc.example.org:6697\n    nick: wabridge\n    tls_fingerprint: " + strings.Repeat("ab:", 31) + "ab\n    flood:\n      rate: -1\n",
		"    server: irc.example.org:6697\n    nick: wabridge\n    mode: puppet\n    puppets:\n      suffix: \"|wa\"\n      max: 3\n      idle_timeout: 1h\n",
		"    server: irc.example.org:6697\n    nick: wabridge\n    channel_keys:\n      \"#secret\": s3cret\n    sender_format: \"\\x02{name}\\x02: {text}\"\n",
	} {
		if _, err := parseSection(t, section); err != nil {
			t.Errorf("%s: %v", section, err)
		}
	}
}
