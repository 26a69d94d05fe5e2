package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeOptions stands in for a connector type's options: one field of each
// kind the decoder supports, and a Validate like the real ones.
type fakeOptions struct {
	Listen          string            `yaml:"listen"`
	Token           string            `yaml:"token" secret:"true"`
	Timeout         time.Duration     `yaml:"timeout"`
	MaxMessageBytes int               `yaml:"max_message_bytes"`
	Port            uint16            `yaml:"port"`
	Ratio           float64           `yaml:"ratio"`
	Verbose         bool              `yaml:"verbose"`
	Mode            Direction         `yaml:"mode"`
	TLS             fakeTLS           `yaml:"tls"`
	Proxy           *fakeProxy        `yaml:"proxy"`
	Allow           []string          `yaml:"allow"`
	Users           []fakeUser        `yaml:"users"`
	Headers         map[string]string `yaml:"headers"`
}

type fakeTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key" secret:"true"`
}

type fakeProxy struct {
	URL     string `yaml:"url"`
	Retries int    `yaml:"retries"`
}

type fakeUser struct {
	Name  string `yaml:"name"`
	Admin bool   `yaml:"admin"`
}

func newFakeOptions() any {
	return &fakeOptions{
		Listen:          "127.0.0.1:8780",
		Timeout:         10 * time.Second,
		MaxMessageBytes: 1 << 20,
		Allow:           []string{"default"},
	}
}

func (o *fakeOptions) Validate(c *Checker) {
	c.ListenAddr("listen", o.Listen)
	c.Required("token", o.Token)
	if o.Timeout < 0 {
		c.Errorf("timeout", "must not be negative")
	}
}

func init() {
	RegisterConnectorType("fake", newFakeOptions)
	RegisterConnectorType("bare", nil)
	RegisterConnectorType("clash", func() any { return &clashOptions{} })
}

// clashOptions has two keys sharing an environment variable.
type clashOptions struct {
	B struct {
		X string `yaml:"x"`
	} `yaml:"b"`
	BX string `yaml:"b_x"`
}

// secret is the token in most test configs; no error may ever show it.
const secret = "t0ken-s3cret"

const okConns = `connectors:
  chat-api:
    type: fake
    token: ` + secret + `
  matrix:
    type: fake
    token: ` + secret + `
`

const okRoute = `routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
      - connector: matrix
        chat: room
`

// parseIn parses text as the file phonebridge.yaml in dir.
func parseIn(t *testing.T, dir, text string) (*Config, error) {
	t.Helper()
	path := filepath.Join(dir, "phonebridge.yaml")
	data := []byte(strings.TrimPrefix(text, "\n"))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func problemsOf(t *testing.T, err error) *Problems {
	t.Helper()
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is %T, not *Problems: %v", err, err)
	}
	return ps
}

func TestParseBadConfigs(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		path string // exact YAML path of the problem
		msg  string // substring of its message
		line int    // 0: not checked
	}{
		{
			name: "unknown top-level key",
			yaml: "stat_dir: x\n" + okConns,
			path: "stat_dir", msg: "unknown key (did you mean state_dir?)", line: 1,
		},
		{
			name: "unknown top-level key without a close match",
			yaml: okConns + "frobnicate: true\n",
			path: "frobnicate", msg: "unknown key (known: connectors, delivery, log, media, metrics, notices, relay, routes, state_dir, store, web)", line: 8,
		},
		{
			name: "web listen not host:port",
			yaml: okConns + "web:\n  listen: localhost\n",
			path: "web.listen", msg: "is not host:port",
		},
		{
			name: "short web token",
			yaml: okConns + "web:\n  listen: 127.0.0.1:8791\n  token: short\n",
			path: "web.token", msg: "use at least 16",
		},
		{
			name: "metrics listen bad port",
			yaml: okConns + "metrics:\n  listen: 127.0.0.1:99999\n",
			path: "metrics.listen", msg: "bad port",
		},
		{
			name: "media public_url not a URL",
			yaml: okConns + "media:\n  public_url: bridge.example.org\n",
			path: "media.public_url", msg: "is not an http(s) URL",
		},
		{
			name: "media expiry zero",
			yaml: okConns + "media:\n  public_url: https://bridge.example.org/media\n  expiry: 0s\n",
			path: "media.expiry", msg: "",
		},
		{
			name: "misspelled connector option",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    listne: 127.0.0.1:9000
`,
			path: "connectors.chat-api.listne", msg: "unknown key (did you mean listen?)", line: 5,
		},
		{
			name: "misspelled nested option",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    tls:
      certt: /x
`,
			path: "connectors.chat-api.tls.certt", msg: "unknown key (did you mean cert?)", line: 6,
		},
		{
			name: "unknown connector type",
			yaml: `
connectors:
  chat-api:
    type: fak
`,
			path: "connectors.chat-api.type", msg: `unknown connector type "fak" (did you mean fake?; known: bare, clash, fake`, line: 3,
		},
		{
			name: "missing connector type",
			yaml: `
connectors:
  chat-api:
    listen: :80
`,
			path: "connectors.chat-api.type", msg: "is required (known: bare, clash, fake", line: 2,
		},
		{
			name: "misspelt type",
			yaml: `
connectors:
  chat-api:
    typo: fake
`,
			path: "connectors.chat-api.typo", msg: "unknown key (did you mean type?)", line: 3,
		},
		{
			name: "empty connector section",
			yaml: `
connectors:
  chat-api:
`,
			path: "connectors.chat-api.type", msg: "is required", line: 2,
		},
		{
			name: "option of a type without options",
			yaml: `
connectors:
  b:
    type: bare
    listen: :80
`,
			path: "connectors.b.listen", msg: "unknown key", line: 4,
		},
		{
			name: "bad duration",
			yaml: okConns + `
delivery:
  retry_min: 5x
`,
			path: "delivery.retry_min", msg: `"5x" is not a duration (e.g. 500ms, 30s, 5m)`, line: 10,
		},
		{
			name: "bare number for a duration",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    timeout: 30
`,
			path: "connectors.chat-api.timeout", msg: `"30" is not a duration: add a unit`, line: 5,
		},
		{
			name: "string for an int",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    max_message_bytes: lots
`,
			path: "connectors.chat-api.max_message_bytes", msg: `expected an integer, got "lots"`, line: 5,
		},
		{
			name: "negative uint",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    port: -1
`,
			path: "connectors.chat-api.port", msg: `expected a non-negative integer, got "-1"`, line: 5,
		},
		{
			name: "uint out of range",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    port: 70000
`,
			path: "connectors.chat-api.port", msg: `"70000" is out of range`, line: 5,
		},
		{
			name: "bad bool",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    verbose: maybe
`,
			path: "connectors.chat-api.verbose", msg: `expected true or false, got "maybe"`, line: 5,
		},
		{
			name: "mapping where a list is expected",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    allow:
      a: b
`,
			path: "connectors.chat-api.allow", msg: "expected a list, got a mapping", line: 5,
		},
		{
			name: "list where a mapping is expected",
			yaml: okConns + "log: [debug]\n",
			path: "log", msg: "expected a mapping, got a list", line: 8,
		},
		{
			name: "list in a string map",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    headers:
      x-a: [1, 2]
`,
			path: "connectors.chat-api.headers.x-a", msg: "expected a string, got a list", line: 6,
		},
		{
			name: "bad value in a pointer section",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    proxy:
      url: http://proxy
      retries: many
`,
			path: "connectors.chat-api.proxy.retries", msg: `expected an integer, got "many"`, line: 7,
		},
		{
			name: "bad value in a list of structs",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    users:
      - name: ann
      - name: bob
        admin: sometimes
`,
			path: "connectors.chat-api.users[1].admin", msg: `expected true or false, got "sometimes"`, line: 8,
		},
		{
			name: "route names an unknown connector",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
      - connector: matrx
        chat: room
`,
			path: "routes[0].endpoints[1].connector", msg: `unknown connector "matrx" (did you mean matrix?)`, line: 14,
		},
		{
			name: "duplicate route name",
			yaml: okConns + okRoute + `
  - name: family
    endpoints:
      - connector: chat-api
        chat: other
      - connector: matrix
        chat: other
`,
			path: "routes[1].name", msg: `duplicate route name "family" (also routes[0])`, line: 16,
		},
		{
			name: "same connector and chat twice in a route",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
      - connector: matrix
        chat: room
      - connector: chat-api
        chat: family
`,
			path: "routes[0].endpoints[2]", msg: `connector "chat-api" chat "family" is already in this route (endpoints[0])`, line: 16,
		},
		{
			name: "chats other than all",
			yaml: okConns + `
routes:
  - name: everything
    endpoints:
      - {connector: chat-api, chats: every}
      - {connector: matrix, chats: all}
`,
			path: "routes[0].endpoints[0].chats", msg: `"every" is not one of all`, line: 12,
		},
		{
			name: "chat and chats together",
			yaml: okConns + `
routes:
  - name: everything
    endpoints:
      - {connector: chat-api, chat: family, chats: all}
      - {connector: matrix, chats: all}
`,
			path: "routes[0].endpoints[0].chats", msg: "give chat (one chat) or chats: all (every chat), not both", line: 12,
		},
		{
			name: "notices to an unknown connector",
			yaml: okConns + okRoute + `
notices:
  connector: matirx
  chat: "!admin:example.org"
`,
			path: "notices.connector", msg: `unknown connector "matirx" (did you mean matrix?)`,
		},
		{
			name: "notices without a chat",
			yaml: okConns + okRoute + `
notices:
  connector: matrix
`,
			path: "notices.chat", msg: "is required",
		},
		{
			name: "bad direction",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
        direction: sideways
      - connector: matrix
        chat: room
`,
			path: "routes[0].endpoints[0].direction", msg: `"sideways" is not one of both, in, out`, line: 14,
		},
		{
			name: "route where nothing sends",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
        direction: out
      - connector: matrix
        chat: room
        direction: out
`,
			path: "routes[0].endpoints", msg: "no endpoint sends into the route", line: 11,
		},
		{
			name: "route where nothing receives",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
        direction: in
      - connector: matrix
        chat: room
        direction: in
`,
			path: "routes[0].endpoints", msg: "no endpoint receives from the route", line: 11,
		},
		{
			name: "route with one endpoint",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
`,
			path: "routes[0].endpoints", msg: "a route needs at least 2 endpoints (got 1)", line: 11,
		},
		{
			name: "route without a name",
			yaml: okConns + `
routes:
  - endpoints:
      - connector: chat-api
        chat: family
      - connector: matrix
        chat: room
`,
			path: "routes[0].name", msg: "is required", line: 10,
		},
		{
			name: "endpoint without a chat",
			yaml: okConns + `
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
      - connector: matrix
`,
			path: "routes[0].endpoints[1].chat", msg: "is required", line: 14,
		},
		{
			name: "bad listen address from the options' Validate",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    listen: localhost
`,
			path: "connectors.chat-api.listen", msg: `"localhost" is not host:port`, line: 5,
		},
		{
			name: "secret given twice",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    token_file: token.txt
`,
			path: "connectors.chat-api.token_file", msg: "give token or token_file, not both", line: 5,
		},
		{
			name: "unreadable secret file",
			yaml: `
connectors:
  chat-api:
    type: fake
    token_file: missing.txt
`,
			path: "connectors.chat-api.token_file", msg: "missing.txt: no such file or directory", line: 4,
		},
		{
			name: "_file for a key that is not secret",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    listen_file: x
`,
			path: "connectors.chat-api.listen_file", msg: "unknown key (did you mean listen?)", line: 5,
		},
		{
			name: "bad connector name",
			yaml: `
connectors:
  Chat_API:
    type: fake
    token: ` + secret + `
`,
			path: "connectors.Chat_API", msg: `bad connector name "Chat_API": use lowercase letters, digits and dashes`, line: 2,
		},
		{
			name: "no connectors",
			yaml: "state_dir: x\n",
			path: "connectors", msg: "at least one connector is required",
		},
		{
			name: "YAML syntax error",
			yaml: "state_dir: x\nconnectors:\n  a: b\n c: d\n",
			path: "", msg: "invalid YAML: did not find expected key", line: 3,
		},
		{
			name: "two documents",
			yaml: okConns + "---\nstate_dir: x\n",
			path: "", msg: "more than one YAML document", line: 8,
		},
		{
			name: "top level is a list",
			yaml: "- a\n- b\n",
			path: "", msg: "the top level must be a mapping", line: 1,
		},
		{
			name: "retry_min above retry_max",
			yaml: okConns + `
delivery:
  retry_min: 10m
  retry_max: 1m
`,
			path: "delivery.retry_min", msg: "10m0s is more than retry_max (1m0s)", line: 10,
		},
		{
			name: "zero send_timeout",
			yaml: okConns + "delivery: {send_timeout: 0s}\n",
			path: "delivery.send_timeout", msg: "must be more than 0 (got 0s)", line: 8,
		},
		{
			name: "negative give_up_after",
			yaml: okConns + "delivery: {give_up_after: -1h}\n",
			path: "delivery.give_up_after", msg: "must not be negative", line: 8,
		},
		{
			name: "bad log level",
			yaml: okConns + "log:\n  level: loud\n",
			path: "log.level", msg: `"loud" is not one of debug, info, warn, error`, line: 9,
		},
		{
			name: "bad relay mode",
			yaml: okConns + "relay:\n  reactions: copy\n",
			path: "relay.reactions", msg: `"copy" is not one of notice, drop`, line: 9,
		},
		{
			name: "bad store sync",
			yaml: okConns + "store:\n  sync: sometimes\n",
			path: "store.sync", msg: `"sometimes" is not one of normal, full`, line: 9,
		},
		{
			name: "empty state_dir",
			yaml: okConns + "state_dir: ''\n",
			path: "state_dir", msg: "is required", line: 8,
		},
		{
			name: "duplicate key",
			yaml: `
connectors:
  chat-api:
    type: fake
    token: ` + secret + `
    listen: :1
    listen: :2
`,
			path: "connectors.chat-api.listen", msg: "duplicate key (first at line 5)", line: 6,
		},
		{
			name: "duplicate connector",
			yaml: okConns + `  chat-api:
    type: fake
`,
			path: "connectors.chat-api", msg: "duplicate key (first at line 2)", line: 8,
		},
		{
			name: "connector section is a string",
			yaml: "connectors:\n  a: fake\n",
			path: "connectors.a", msg: `expected a mapping with type: and the connector's options, got "fake"`, line: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := parseIn(t, dir, tt.yaml)
			if err == nil {
				t.Fatal("no error")
			}
			ps := problemsOf(t, err)
			if ps.File != filepath.Join(dir, "phonebridge.yaml") {
				t.Errorf("File = %q", ps.File)
			}
			text := err.Error()
			if strings.Contains(text, secret) {
				t.Errorf("error shows the secret:\n%s", text)
			}
			if tt.path != "" && !strings.Contains(text, tt.path+": ") {
				t.Errorf("error does not name %s:\n%s", tt.path, text)
			}
			for _, p := range ps.Items {
				if p.Path == tt.path && strings.Contains(p.Message, tt.msg) {
					if tt.line != 0 && p.Line != tt.line {
						t.Errorf("line = %d, want %d: %s", p.Line, tt.line, p)
					}
					return
				}
			}
			t.Errorf("no problem at %q containing %q in:\n%s", tt.path, tt.msg, text)
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	_, err := parseIn(t, dir, `
state_dir: ./state
log:
  levl: debug
delivery:
  retry_min: 5x
connectors:
  chat-api:
    type: fake
    token: `+secret+`
    listen: nowhere
    max_message_bytes: lots
  matrix:
    type: matrx
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
        direction: sideways
`)
	ps := problemsOf(t, err)
	want := []struct {
		line int
		path string
	}{
		{3, "log.levl"},
		{5, "delivery.retry_min"},
		{10, "connectors.chat-api.listen"},
		{11, "connectors.chat-api.max_message_bytes"},
		{13, "connectors.matrix.type"},
		{16, "routes[0].endpoints"},
		{19, "routes[0].endpoints[0].direction"},
	}
	if len(ps.Items) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(ps.Items), len(want), err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("error has %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if ps.Items[i].Path != w.path || ps.Items[i].Line != w.line {
			t.Errorf("problem %d is %s at line %d, want %s at line %d", i, ps.Items[i].Path, ps.Items[i].Line, w.path, w.line)
		}
		prefix := ps.File + ":" + strconv.Itoa(w.line) + ": " + w.path + ": "
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], prefix)
		}
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error shows the secret:\n%s", err)
	}
}

func TestParseGoodConfig(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseIn(t, dir, `
state_dir: ./var/state
log:
  format: json
delivery:
  retry_max: 2m
  give_up_after: 0
connectors:
  chat-api:
    type: fake
    token: `+secret+`
    listen: 0.0.0.0:9000
    timeout: 1m30s
    max_message_bytes: 0x400
    port: 8080
    ratio: 0.5
    verbose: yes
    mode: in
    tls:
      cert: /etc/cert.pem
    proxy:
      url: http://proxy:3128
      retries: 3
    allow: [alice, "0123"]
    users:
      - name: ann
        admin: true
      - name: bob
    headers:
      X-Token: abc
      x-empty:
  matrix:
    type: fake
    token: `+secret+`
  bare-one:
    type: bare
routes:
  - name: family
    endpoints:
      - connector: chat-api
        chat: family
        direction: out
      - connector: matrix
        chat: "!room:example.org"
`)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "var", "state"); cfg.StateDir != want {
		t.Errorf("StateDir = %q, want %q", cfg.StateDir, want)
	}
	if want := filepath.Join(dir, "var", "state", "phonebridge.db"); cfg.Store.Path != want {
		t.Errorf("Store.Path = %q, want %q", cfg.Store.Path, want)
	}
	def := Defaults()
	if cfg.Log.Level != def.Log.Level || cfg.Log.Format != "json" {
		t.Errorf("Log = %+v", cfg.Log)
	}
	if cfg.Store.Sync != "normal" || cfg.Relay != def.Relay {
		t.Errorf("defaults lost: %+v %+v", cfg.Store, cfg.Relay)
	}
	wantDelivery := Delivery{RetryMin: time.Second, RetryMax: 2 * time.Minute, GiveUpAfter: 0, SendTimeout: 30 * time.Second}
	if cfg.Delivery != wantDelivery {
		t.Errorf("Delivery = %+v, want %+v", cfg.Delivery, wantDelivery)
	}
	if len(cfg.Connectors) != 3 {
		t.Fatalf("%d connectors", len(cfg.Connectors))
	}
	for name, c := range cfg.Connectors {
		if c.Name != name {
			t.Errorf("connector %q has Name %q", name, c.Name)
		}
	}
	if c := cfg.Connectors["bare-one"]; c.Type != "bare" || c.Options != nil {
		t.Errorf("bare-one = %+v", c)
	}
	o, ok := cfg.Connectors["chat-api"].Options.(*fakeOptions)
	if !ok {
		t.Fatalf("options are %T", cfg.Connectors["chat-api"].Options)
	}
	if o.Listen != "0.0.0.0:9000" || o.Token != secret || o.Timeout != 90*time.Second ||
		o.MaxMessageBytes != 1024 || o.Port != 8080 || o.Ratio != 0.5 || !o.Verbose || o.Mode != In {
		t.Errorf("scalars = %+v", o)
	}
	if o.TLS.Cert != "/etc/cert.pem" || o.Proxy == nil || *o.Proxy != (fakeProxy{URL: "http://proxy:3128", Retries: 3}) {
		t.Errorf("sections = %+v %+v", o.TLS, o.Proxy)
	}
	if strings.Join(o.Allow, ",") != "alice,0123" {
		t.Errorf("Allow = %q", o.Allow)
	}
	if len(o.Users) != 2 || o.Users[0] != (fakeUser{"ann", true}) || o.Users[1] != (fakeUser{Name: "bob"}) {
		t.Errorf("Users = %+v", o.Users)
	}
	if len(o.Headers) != 2 || o.Headers["X-Token"] != "abc" || o.Headers["x-empty"] != "" {
		t.Errorf("Headers = %q", o.Headers)
	}
	m := cfg.Connectors["matrix"].Options.(*fakeOptions)
	if m.Listen != "127.0.0.1:8780" || m.Timeout != 10*time.Second || m.Proxy != nil || strings.Join(m.Allow, ",") != "default" {
		t.Errorf("matrix options lost their defaults: %+v", m)
	}
	if len(cfg.Routes) != 1 || len(cfg.Routes[0].Endpoints) != 2 {
		t.Fatalf("Routes = %+v", cfg.Routes)
	}
	eps := cfg.Routes[0].Endpoints
	if eps[0] != (Endpoint{Connector: "chat-api", Chat: "family", Direction: Out}) || eps[1] != (Endpoint{Connector: "matrix", Chat: "!room:example.org", Direction: Both}) {
		t.Errorf("Endpoints = %+v", eps)
	}
	if cfg.Path != filepath.Join(dir, "phonebridge.yaml") {
		t.Errorf("Path = %q", cfg.Path)
	}
}

func TestParsePaths(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseIn(t, dir, okConns+"state_dir: /srv/pb/../pb\nstore:\n  path: db/pb.sqlite\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/srv/pb" {
		t.Errorf("StateDir = %q", cfg.StateDir)
	}
	if want := filepath.Join(dir, "db", "pb.sqlite"); cfg.Store.Path != want {
		t.Errorf("Store.Path = %q, want %q", cfg.Store.Path, want)
	}

	// Parsed from bytes, relative paths resolve against the working dir.
	t.Chdir(dir)
	cfg, err = Parse([]byte(okConns), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state"); cfg.StateDir != want {
		t.Errorf("StateDir = %q, want %q", cfg.StateDir, want)
	}
}

func TestParseEmptyFileKeepsDefaults(t *testing.T) {
	_, err := Parse(nil, "")
	ps := problemsOf(t, err)
	if len(ps.Items) != 1 || ps.Items[0].Path != "connectors" {
		t.Errorf("problems = %v", err)
	}
}

func TestParseAnchorsAndMerges(t *testing.T) {
	cfg, err := Parse([]byte(`
connectors:
  a: &base
    type: fake
    token: `+secret+`
    timeout: 5s
  b:
    <<: *base
    listen: :9001
`), "")
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Connectors["b"].Options.(*fakeOptions)
	if cfg.Connectors["b"].Type != "fake" || b.Timeout != 5*time.Second || b.Listen != ":9001" || b.Token != secret {
		t.Errorf("b = %+v", b)
	}
}

func TestParseMergedDuplicateReportedOnce(t *testing.T) {
	_, err := Parse([]byte(`
connectors:
  a: &base
    type: fake
    token: one
    token: two
  b:
    <<: *base
`), "")
	if err == nil || strings.Count(err.Error(), "duplicate key") != 1 ||
		!strings.Contains(err.Error(), "connectors.a.token: duplicate key (first at line 5)") {
		t.Errorf("err = %v", err)
	}
}

func TestEnvOverrides(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PHONEBRIDGE_LOG_LEVEL", "debug")
	t.Setenv("PHONEBRIDGE_STATE_DIR", "/var/lib/phonebridge")
	t.Setenv("PHONEBRIDGE_DELIVERY_RETRY_MAX", "10m")
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN", "from-env")
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_MAX_MESSAGE_BYTES", "2048")
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TLS_CERT", "/env/cert")
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_PROXY_RETRIES", "7")
	t.Setenv("PHONEBRIDGE_CONNECTORS_MATRIX_VERBOSE", "true")
	t.Setenv("PHONEBRIDGE_CONNECTORS_NOPE_TOKEN", "ignored")
	cfg, err := parseIn(t, dir, okConns+"log:\n  level: warn\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "debug" || cfg.StateDir != "/var/lib/phonebridge" || cfg.Delivery.RetryMax != 10*time.Minute {
		t.Errorf("top level: %+v %q %+v", cfg.Log, cfg.StateDir, cfg.Delivery)
	}
	o := cfg.Connectors["chat-api"].Options.(*fakeOptions)
	if o.Token != "from-env" || o.MaxMessageBytes != 2048 || o.TLS.Cert != "/env/cert" || o.Proxy == nil || o.Proxy.Retries != 7 {
		t.Errorf("chat-api options: %+v %+v", o, o.Proxy)
	}
	if m := cfg.Connectors["matrix"].Options.(*fakeOptions); !m.Verbose || m.Token != secret {
		t.Errorf("matrix options: %+v", m)
	}
	if _, ok := cfg.Connectors["nope"]; ok {
		t.Error("an environment variable created a connector")
	}
}

func TestEnvBadValues(t *testing.T) {
	t.Setenv("PHONEBRIDGE_DELIVERY_RETRY_MIN", "x")
	t.Setenv("PHONEBRIDGE_LOG_LEVEL", "loud")
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_PORT", "big")
	_, err := parseIn(t, t.TempDir(), okConns+"log:\n  level: info\n")
	ps := problemsOf(t, err)
	text := err.Error()
	for _, want := range []string{
		`delivery.retry_min (from PHONEBRIDGE_DELIVERY_RETRY_MIN): "x" is not a duration (e.g. 500ms, 30s, 5m)`,
		`log.level (from PHONEBRIDGE_LOG_LEVEL): "loud" is not one of debug, info, warn, error`,
		`connectors.chat-api.port (from PHONEBRIDGE_CONNECTORS_CHAT_API_PORT): expected a non-negative integer, got "big"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	for _, p := range ps.Items {
		if p.Line != 0 || p.Env == "" {
			t.Errorf("%s: Line = %d, Env = %q; want 0 and a variable", p, p.Line, p.Env)
		}
	}
}

func TestEnvAmbiguousVariable(t *testing.T) {
	// Connector a's key b_x and connector a-b's key x (were there one)
	// share a variable; with a nested key the clash is real.
	t.Setenv("PHONEBRIDGE_CONNECTORS_A_B_X", "v")
	_, err := Parse([]byte(okConns+"  a:\n    type: clash\n"), "")
	if err == nil || !strings.Contains(err.Error(), "PHONEBRIDGE_CONNECTORS_A_B_X: is ambiguous: it could set connectors.a.b.x or connectors.a.b_x") {
		t.Errorf("err = %v", err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token.txt"), []byte(secret+"\n\n  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte("KEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseIn(t, dir, `
connectors:
  chat-api:
    type: fake
    token_file: token.txt
    tls:
      key_file: `+filepath.Join(dir, "key.pem")+`
`)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Connectors["chat-api"].Options.(*fakeOptions)
	if o.Token != secret || o.TLS.Key != "KEY" {
		t.Errorf("Token = %q, Key = %q", o.Token, o.TLS.Key)
	}

	// An empty value, as in the example file, does not clash with _file.
	cfg, err = parseIn(t, dir, "connectors:\n  chat-api:\n    type: fake\n    token: \"\"\n    token_file: token.txt\n")
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Connectors["chat-api"].Options.(*fakeOptions); o.Token != secret {
		t.Errorf("Token = %q", o.Token)
	}

	// A file's secret in a config with problems stays out of the error.
	_, err = parseIn(t, dir, `
connectors:
  chat-api:
    type: fake
    token_file: token.txt
    listen: bad
`)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("err = %v", err)
	}

	// A secret of the wrong shape is described, not shown.
	_, err = parseIn(t, dir, `
connectors:
  chat-api:
    type: fake
    token: {`+secret+`: 1}
`)
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "connectors.chat-api.token: expected a string, got a mapping") {
		t.Errorf("err = %v", err)
	}
}

func TestSecretFilesFromEnv(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "env-token"), []byte("from-file \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The environment's _file wins over the file's value.
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN_FILE", "env-token")
	cfg, err := parseIn(t, dir, okConns)
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Connectors["chat-api"].Options.(*fakeOptions); o.Token != "from-file" {
		t.Errorf("Token = %q", o.Token)
	}

	// The environment's value wins over the file's _file.
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN_FILE", "")
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN", "from-env")
	cfg, err = parseIn(t, dir, "connectors:\n  chat-api:\n    type: fake\n    token_file: missing\n")
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Connectors["chat-api"].Options.(*fakeOptions); o.Token != "from-env" {
		t.Errorf("Token = %q", o.Token)
	}

	// Both in the environment is a problem; so is an unreadable file.
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN", secret)
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN_FILE", "env-token")
	t.Setenv("PHONEBRIDGE_CONNECTORS_MATRIX_TOKEN_FILE", "/nonexistent/token")
	_, err = parseIn(t, dir, okConns)
	text := ""
	if err != nil {
		text = err.Error()
	}
	for _, want := range []string{
		"connectors.chat-api.token_file (from PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN_FILE): PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN is set too; set only one of them",
		"connectors.matrix.token_file (from PHONEBRIDGE_CONNECTORS_MATRIX_TOKEN_FILE): cannot read /nonexistent/token: no such file or directory",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, secret) {
		t.Errorf("error shows the secret:\n%s", text)
	}
}

func TestValidateConfigBuiltInCode(t *testing.T) {
	cfg := Defaults()
	cfg.Connectors["a"] = &Connector{Name: "a", Type: "fake", Options: &fakeOptions{Listen: ":1", Token: secret}}
	cfg.Connectors["b"] = &Connector{Name: "b", Type: "fake"}
	cfg.Routes = []Route{{Name: "r", Endpoints: []Endpoint{{Connector: "a", Chat: "x"}, {Connector: "b", Chat: "y"}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}

	cfg.Connectors["a"].Options.(*fakeOptions).Listen = ""
	cfg.Routes[0].Endpoints[1].Connector = "c"
	err := cfg.Validate()
	ps := problemsOf(t, err)
	want := "routes[0].endpoints[1].connector: unknown connector \"c\" (known: a, b)\nconnectors.a.listen: is required"
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
	for _, p := range ps.Items {
		if p.Line != 0 {
			t.Errorf("%s has line %d", p, p.Line)
		}
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	xdg := filepath.Join(dir, "xdg")
	etc := filepath.Join(dir, "etc", "config.yaml")
	for _, d := range []string{work, filepath.Join(xdg, "phonebridge"), filepath.Dir(etc)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := systemConfig
	systemConfig = etc
	t.Cleanup(func() { systemConfig = old })
	t.Chdir(work)
	t.Setenv("XDG_CONFIG_HOME", xdg)

	_, err := Find("")
	if err == nil || !strings.Contains(err.Error(), "looked for phonebridge.yaml, "+filepath.Join(xdg, "phonebridge", "config.yaml")+", "+etc) ||
		!strings.HasSuffix(err.Error(), ": pass -c FILE, or start from `phonebridge config example > phonebridge.yaml`") ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("nothing to find: %v", err)
	}

	touch := func(p string) {
		t.Helper()
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want string) {
		t.Helper()
		got, err := Find("")
		if err != nil || got != want {
			t.Errorf("Find = %q, %v; want %q", got, err, want)
		}
	}
	touch(etc)
	check(etc)
	xdgFile := filepath.Join(xdg, "phonebridge", "config.yaml")
	touch(xdgFile)
	check(xdgFile)
	touch(filepath.Join(work, "phonebridge.yaml"))
	check("phonebridge.yaml")

	// Without XDG_CONFIG_HOME, ~/.config.
	home := filepath.Join(dir, "home")
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	if sp := SearchPath(); sp[1] != filepath.Join(home, ".config", "phonebridge", "config.yaml") {
		t.Errorf("SearchPath = %q", sp)
	}

	// An explicit file wins, and must exist.
	if got, err := Find(etc); got != etc || err != nil {
		t.Errorf("Find(%q) = %q, %v", etc, got, err)
	}
	if _, err := Find("nope.yaml"); err == nil || err.Error() != "config file nope.yaml: no such file" {
		t.Errorf("Find(nope.yaml) = %v", err)
	}
	if _, err := Find(work); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("Find(dir) = %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.HasSuffix(err.Error(), "nope.yaml: no such file or directory") {
		t.Errorf("err = %v", err)
	}
}

func TestEnvVar(t *testing.T) {
	for path, want := range map[string]string{
		"state_dir":                 "PHONEBRIDGE_STATE_DIR",
		"log.level":                 "PHONEBRIDGE_LOG_LEVEL",
		"delivery.retry_max":        "PHONEBRIDGE_DELIVERY_RETRY_MAX",
		"connectors.chat-api.token": "PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN",
	} {
		if got := EnvVar(path); got != want {
			t.Errorf("EnvVar(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestClosest(t *testing.T) {
	known := []string{"listen", "token", "timeout", "state_dir", "api"}
	for got, want := range map[string]string{
		"listne":     "listen",
		"Listen":     "listen",
		"tokn":       "token",
		"token_file": "token",
		"state":      "state_dir",
		"ap":         "api",
		"xy":         "",
		"frobnicate": "",
	} {
		if c := closest(got, known); c != want {
			t.Errorf("closest(%q) = %q, want %q", got, c, want)
		}
	}
}
