// Package matrix is phonebridge's Matrix connector, on mautrix-go. In
// appservice mode (the recommended one, as mautrix-whatsapp users know it)
// each WhatsApp contact is a ghost user and each chat a portal room; in bot
// mode a normal account relays the rooms the routes name, showing who
// spoke through a template.
package matrix

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/config"
)

// Modes.
const (
	ModeAppservice = "appservice"
	ModeBot        = "bot"
)

// Options is a connectors.NAME section of type matrix.
type Options struct {
	// Mode is "appservice" or "bot".
	Mode string `yaml:"mode"`
	// Homeserver is the client-server API's base URL.
	Homeserver string `yaml:"homeserver"`
	// Domain is the homeserver's server name: the part after ':' in
	// user ids.
	Domain string `yaml:"domain"`
	// MaxMediaBytes bounds an attachment uploaded to or downloaded from
	// the content repository.
	MaxMediaBytes int64 `yaml:"max_media_bytes"`
	// SyncTimeout is how long one long-poll /sync waits on the homeserver
	// (bot mode): idle means one request per SyncTimeout.
	SyncTimeout time.Duration `yaml:"sync_timeout"`

	// Bot mode: the account, by access token or by password.
	UserID      string `yaml:"user_id"`
	AccessToken string `yaml:"access_token" secret:"true"`
	Password    string `yaml:"password" secret:"true"`
	// SenderFormat prefixes relayed messages in bot mode, where the bot
	// speaks for everyone: {name} is the sender's name. HTML is allowed.
	SenderFormat string `yaml:"sender_format"`

	// Appservice mode.
	//
	// Registration is the registration file `phonebridge matrix
	// registration` writes for the homeserver (tokens, namespaces).
	Registration string `yaml:"registration"`
	// Listen is where the appservice API listens for the homeserver.
	Listen string `yaml:"listen"`
	// URL is how the homeserver reaches Listen (written into the
	// registration); default http://LISTEN.
	URL string `yaml:"url"`
	// BotLocalpart is the bridge bot's user: @BOT:DOMAIN.
	BotLocalpart string `yaml:"bot_localpart"`
	// GhostPrefix starts every ghost user's localpart: @wa_15551234567:DOMAIN.
	GhostPrefix string `yaml:"ghost_prefix"`
	// GhostName is a ghost's display name: {name} is the contact's.
	GhostName string `yaml:"ghost_name"`
	// Owner is the Matrix user the bridge works for: invited to every
	// portal with admin power; their messages in portals are relayed.
	Owner string `yaml:"owner"`
	// Allow lists who else may relay into other platforms from portals:
	// user ids (@u:example.org) or whole domains (example.org). Others
	// are not relayed and get a notice.
	Allow []string `yaml:"allow"`
	// PortalsAtStart says which chats of a `chats: all` route get their
	// portal before their first message: "groups" (the default; a phone's
	// contacts are its whole address book), "all" or "none".
	PortalsAtStart string `yaml:"portals_at_start"`
}

// Defaults.
const (
	DefaultMaxMediaBytes = 100 << 20
	DefaultSyncTimeout   = 30 * time.Second
	DefaultSenderFormat  = "<b>{name}</b>: "
	DefaultListen        = "127.0.0.1:29318"
	DefaultBotLocalpart  = "phonebridgebot"
	DefaultGhostPrefix   = "wa_"
	DefaultGhostName     = "{name} (WhatsApp)"
)

// Values of portals_at_start.
const (
	PortalsGroups = "groups"
	PortalsAll    = "all"
	PortalsNone   = "none"
)

// NewOptions returns Options with every default set.
func NewOptions() *Options {
	return &Options{
		Mode:           ModeAppservice,
		MaxMediaBytes:  DefaultMaxMediaBytes,
		SyncTimeout:    DefaultSyncTimeout,
		SenderFormat:   DefaultSenderFormat,
		Listen:         DefaultListen,
		BotLocalpart:   DefaultBotLocalpart,
		GhostPrefix:    DefaultGhostPrefix,
		GhostName:      DefaultGhostName,
		PortalsAtStart: PortalsGroups,
	}
}

// Validate implements config.Validator.
func (o *Options) Validate(c *config.Checker) {
	c.OneOf("mode", o.Mode, ModeAppservice, ModeBot)
	if c.Required("homeserver", o.Homeserver) {
		if u, err := url.Parse(o.Homeserver); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.Errorf("homeserver", "%q is not an http(s) URL such as https://matrix.example.org", o.Homeserver)
		}
	}
	c.Required("domain", o.Domain)
	c.Positive("max_media_bytes", o.MaxMediaBytes)
	if o.SyncTimeout < time.Second {
		c.Errorf("sync_timeout", "must be at least 1s (got %s)", o.SyncTimeout)
	}
	switch o.Mode {
	case ModeBot:
		if c.Required("user_id", o.UserID) && !isUserID(o.UserID) {
			c.Errorf("user_id", "%q is not a Matrix user id such as @bridge:example.org", o.UserID)
		}
		if o.AccessToken == "" && o.Password == "" {
			c.Errorf("access_token", "is required in bot mode (or give password)")
		}
	case ModeAppservice:
		c.Required("registration", o.Registration)
		c.ListenAddr("listen", o.Listen)
		if o.URL != "" {
			if u, err := url.Parse(o.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				c.Errorf("url", "%q is not an http(s) URL", o.URL)
			}
		}
		if c.Required("bot_localpart", o.BotLocalpart) && !isLocalpart(o.BotLocalpart) {
			c.Errorf("bot_localpart", "%q may hold only a-z 0-9 . _ = - /", o.BotLocalpart)
		}
		if c.Required("ghost_prefix", o.GhostPrefix) {
			// No '=': it starts the escapes in ghosts' localparts.
			if !isLocalpart(o.GhostPrefix) || strings.Contains(o.GhostPrefix, "=") {
				c.Errorf("ghost_prefix", "%q may hold only a-z 0-9 . _ - /", o.GhostPrefix)
			} else if strings.HasPrefix(o.BotLocalpart, o.GhostPrefix) {
				c.Errorf("ghost_prefix", "%q also starts bot_localpart %q, so the bot would pass for a ghost: pick another", o.GhostPrefix, o.BotLocalpart)
			}
		}
		if c.Required("owner", o.Owner) && !isUserID(o.Owner) {
			c.Errorf("owner", "%q is not a Matrix user id such as @you:example.org", o.Owner)
		}
		c.OneOf("portals_at_start", o.PortalsAtStart, PortalsGroups, PortalsAll, PortalsNone)
		for i, a := range o.Allow {
			if a == "" || (strings.HasPrefix(a, "@") && !isUserID(a)) {
				c.At("allow").Errorf("["+strconv.Itoa(i)+"]", "%q is neither a user id (@you:example.org) nor a domain", a)
			}
		}
	}
}

// isUserID reports whether s looks like @localpart:server.
func isUserID(s string) bool {
	local, server, ok := strings.Cut(strings.TrimPrefix(s, "@"), ":")
	return strings.HasPrefix(s, "@") && ok && local != "" && server != ""
}

// isLocalpart reports whether s uses only the characters the spec allows
// in new user ids' localparts.
func isLocalpart(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("._=-/", c) >= 0) {
			return false
		}
	}
	return s != ""
}
