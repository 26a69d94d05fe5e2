// Package config loads phonebridge's YAML configuration into typed structs:
// strictly (an unknown key is an error naming its YAML path), with
// PHONEBRIDGE_* environment overrides and *_file secrets, and validates it,
// reporting every problem at once.
package config

import (
	"sort"
	"sync"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	// StateDir holds the database and the control socket. Relative paths
	// in the config are resolved against the config file's directory.
	StateDir string   `yaml:"state_dir"`
	Log      Log      `yaml:"log"`
	Store    Store    `yaml:"store"`
	Delivery Delivery `yaml:"delivery"`
	Relay    Relay    `yaml:"relay"`
	// Connectors by name; decoded by the registered type's options.
	Connectors map[string]*Connector `yaml:"connectors"`
	Routes     []Route               `yaml:"routes"`
	// Notices is where phonebridge posts what an operator must know (a
	// WhatsApp link logged out from the phone, a ban): any connector's
	// chat. Empty: notices go to the log only.
	Notices Notices `yaml:"notices"`
	// Web is the local page that shows the links and links a phone.
	Web Web `yaml:"web"`
	// Metrics serves Prometheus metrics, /healthz and /readyz.
	Metrics Metrics `yaml:"metrics"`
	// Media serves attachments to destinations that can only show a link
	// (IRC, bot-mode templates).
	Media Media `yaml:"media"`

	// Path is the file this config was loaded from; "" when parsed from bytes.
	Path string `yaml:"-"`
}

// Log configures logging; the command line's --log-level and --log-format win.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// Web configures the link page. It is off unless Listen is set.
type Web struct {
	// Listen is host:port; keep it on loopback unless a proxy in front
	// adds TLS.
	Listen string `yaml:"listen"`
	// Token is what the page asks for (also accepted as ?token=). Empty:
	// one is generated and kept in state_dir/web.token.
	Token string `yaml:"token" secret:"true"`
}

// Metrics configures the Prometheus endpoint. It is off unless Listen is
// set.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// Media configures the media server. It is off unless PublicURL is set.
type Media struct {
	// Listen is where it serves; PublicURL is how others reach it (a
	// reverse proxy's https URL), the base of every link handed out.
	Listen    string `yaml:"listen"`
	PublicURL string `yaml:"public_url"`
	// MaxBytes bounds one file; Expiry is how long a link works.
	MaxBytes int64         `yaml:"max_bytes"`
	Expiry   time.Duration `yaml:"expiry"`
}

// Store configures the SQLite database.
type Store struct {
	// Path of the database file; default state_dir/phonebridge.db.
	Path string `yaml:"path"`
	// Sync is "normal" (survives a crash of the process) or "full" (also
	// survives power loss, at a cost in throughput).
	Sync string `yaml:"sync"`
	// KeepMessages is how long the message map (ids, and the text kept
	// for quotes) and failed deliveries are kept; 0 keeps them forever.
	KeepMessages time.Duration `yaml:"keep_messages"`
}

// Delivery configures the outbox's retries.
type Delivery struct {
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// GiveUpAfter is how long a transiently failing event is retried
	// before it is recorded as failed; 0 retries forever.
	GiveUpAfter time.Duration `yaml:"give_up_after"`
	SendTimeout time.Duration `yaml:"send_timeout"`
}

// Relay configures fallbacks where a destination lacks a capability.
type Relay struct {
	Edits     string `yaml:"edits"`     // copy (a corrected copy marked as an edit) or drop
	Reactions string `yaml:"reactions"` // notice (a short notice) or drop
	Deletes   string `yaml:"deletes"`   // notice or drop
}

// Connector is one connectors.NAME section.
type Connector struct {
	Name string `yaml:"-"`
	Type string `yaml:"type"`
	// Options is the pointer the type's NewOptions returned, decoded.
	Options any `yaml:"-"`
}

// Route joins chats across connectors.
type Route struct {
	Name      string     `yaml:"name"`
	Endpoints []Endpoint `yaml:"endpoints"`
}

// Endpoint is one chat of a route, or every chat of a connector.
type Endpoint struct {
	Connector string `yaml:"connector"`
	// Chat is the chat's id, or, where the connector resolves names
	// (WhatsApp), its exact name.
	Chat string `yaml:"chat"`
	// Chats "all" stands for every chat of the connector: an event from
	// chat X goes to chat X on the route's other "all" endpoints (a
	// connector that makes a chat per origin chat), and to its fixed ones.
	Chats     string    `yaml:"chats"`
	Direction Direction `yaml:"direction"`
}

// AllChats is the value of Endpoint.Chats that takes every chat.
const AllChats = "all"

// Notices names the chat phonebridge's notices go to.
type Notices struct {
	Connector string `yaml:"connector"`
	Chat      string `yaml:"chat"`
}

// Direction says which way events cross an endpoint.
type Direction string

// Directions, seen from the route: "in" takes the chat's events into the
// route and delivers nothing to it; "out" delivers the route's events to
// the chat and relays nothing from it.
const (
	Both Direction = "both"
	In   Direction = "in"
	Out  Direction = "out"
)

// Receives reports whether the endpoint gets the route's events.
func (d Direction) Receives() bool { return d == Both || d == Out || d == "" }

// Sends reports whether the endpoint's events enter the route.
func (d Direction) Sends() bool { return d == Both || d == In || d == "" }

// Defaults returns a Config with every default set.
func Defaults() Config {
	return Config{
		StateDir: "state",
		Log:      Log{Level: "info", Format: "text"},
		Store:    Store{Sync: "normal", KeepMessages: 8760 * time.Hour},
		Delivery: Delivery{
			RetryMin:    time.Second,
			RetryMax:    5 * time.Minute,
			GiveUpAfter: 72 * time.Hour,
			SendTimeout: 30 * time.Second,
		},
		Relay:      Relay{Edits: "copy", Reactions: "notice", Deletes: "notice"},
		Connectors: map[string]*Connector{},
		Media:      Media{Listen: "127.0.0.1:8790", MaxBytes: 100 << 20, Expiry: 7 * 24 * time.Hour},
	}
}

// Validator is implemented by connector options structs: Validate adds a
// problem to c for each thing wrong, naming the key.
type Validator interface {
	Validate(c *Checker)
}

var (
	typesMu sync.RWMutex
	types   = map[string]func() any{}
)

// RegisterConnectorType makes a connector type's options known to the
// decoder. bridge.Register calls it; tests may call it directly.
func RegisterConnectorType(name string, newOptions func() any) {
	typesMu.Lock()
	defer typesMu.Unlock()
	types[name] = newOptions
}

func connectorType(name string) (func() any, bool) {
	typesMu.RLock()
	defer typesMu.RUnlock()
	f, ok := types[name]
	return f, ok
}

func connectorTypeNames() []string {
	typesMu.RLock()
	defer typesMu.RUnlock()
	names := make([]string, 0, len(types))
	for n := range types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
