package irc

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/phonebridge/phonebridge/bridge"
)

// Connector is one irc connector in relay-bot mode: one connection joins
// the channels the routes name and relays for everyone.
type Connector struct {
	name  string
	log   *slog.Logger
	opts  Options
	store *bridge.Store
	rend  renderer
	// newClient builds the connection; tests replace it.
	newClient func(cfg clientConfig, h clientHandler) (ircClient, error)

	sent *progress

	mu   sync.Mutex
	sink bridge.Sink
	bot  ircClient
	// casemap is the server's CASEMAPPING: "rfc1459" (default) or "ascii".
	casemap string
	// routed are the routes' fixed chats: channels (joined) and nicks
	// (queries), by folded name.
	routed map[string]string
	// joined are the channels the bot is in, by folded name.
	joined map[string]bool
	// refused are channels the server would not let the bot join, with
	// why: sends to them fail until a join succeeds.
	refused map[string]string
	// warned are one-time operator notices already given.
	warned  map[string]bool
	members *members // nil unless show_joins

	cancel context.CancelFunc
	done   chan struct{}
}

var (
	_ bridge.Connector     = (*Connector)(nil)
	_ bridge.RouteWatcher  = (*Connector)(nil)
	_ bridge.ChatIDChecker = (*Connector)(nil)
	_ bridge.ChatLister    = (*Connector)(nil)
)

// New builds an irc connector; nothing is contacted until Start.
func New(env bridge.Env, opts *Options) (*Connector, error) {
	if opts == nil {
		return nil, fmt.Errorf("irc connector %s: no options", env.Name)
	}
	if env.Store == nil {
		return nil, fmt.Errorf("irc connector %s needs the bridge's store", env.Name)
	}
	tpl, err := parseTemplate(opts.SenderFormat)
	if err != nil {
		return nil, fmt.Errorf("irc connector %s: sender_format %w", env.Name, err)
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := *opts
	o.ClientCert, o.ClientKey = env.Path(o.ClientCert), env.Path(o.ClientKey)
	c := &Connector{
		name:    env.Name,
		log:     log,
		opts:    o,
		store:   env.Store,
		rend:    renderer{format: tpl, zeroWidth: o.ZeroWidthNames, colours: o.NickColors, maxLines: o.MaxLines},
		sent:    newProgress(env.Store, env.Name, log),
		casemap: "rfc1459",
		routed:  map[string]string{},
		joined:  map[string]bool{},
		refused: map[string]string{},
		warned:  map[string]bool{},
	}
	c.newClient = c.dialClient
	if o.ShowJoins {
		c.members = newMembers()
	}
	return c, nil
}

// Capabilities implements bridge.Connector. IRC has none of the extras:
// the core turns edits, reactions, deletes, replies and media into text
// (see the relay: section), and Send splits lines itself.
func (c *Connector) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{HTML: true}
}

// Start implements bridge.Connector: the connection runs in the
// background, reconnecting on its own; Start fails only for a config the
// client refuses.
func (c *Connector) Start(ctx context.Context, sink bridge.Sink) error {
	if err := c.sent.load(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.sink = sink
	cfg := clientConfig{nick: c.opts.Nick, channels: map[string]string{}}
	for _, chat := range c.routed {
		if isChannel(chat) {
			cfg.channels[chat] = c.channelKey(chat)
		}
	}
	c.mu.Unlock()
	cli, err := c.newClient(cfg, handler{c})
	if err != nil {
		return fmt.Errorf("irc connector %s: %w", c.name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.bot = cli
	c.cancel = cancel
	c.done = make(chan struct{})
	c.mu.Unlock()
	if !c.opts.TLS {
		c.log.Warn("the IRC connection is not encrypted; set tls: true unless the server is on this machine", "server", c.opts.Server)
	}
	sink.SetState(bridge.StateConnecting, "connecting to "+c.opts.Server+" as "+c.opts.Nick)
	go func() {
		defer close(c.done)
		if err := cli.Run(runCtx); err != nil {
			c.log.Error("the IRC connection stopped for good; fix the config and restart", "server", c.opts.Server, "err", err)
			sink.SetState(bridge.StateFailed, err.Error())
		}
	}()
	return nil
}

// Stop implements bridge.Connector: the client sends QUIT and closes.
func (c *Connector) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("irc connector %s did not stop in time: %w", c.name, ctx.Err())
	}
}

// channelKey is the configured key of channel, matched case-insensitively.
func (c *Connector) channelKey(channel string) string {
	for ch, key := range c.opts.ChannelKeys {
		if c.foldLocked(ch) == c.foldLocked(channel) {
			return key
		}
	}
	return ""
}

// RoutedChats implements bridge.RouteWatcher: the bot joins the routed
// channels and parts those no route names any more. Nicks are queries:
// nothing to join.
func (c *Connector) RoutedChats(chats []string) {
	c.mu.Lock()
	old := c.routed
	c.routed = make(map[string]string, len(chats))
	for _, chat := range chats {
		c.routed[c.foldLocked(chat)] = chat
	}
	bot := c.bot
	type join struct{ ch, key string }
	var joins []join
	var parts []string
	for f, chat := range c.routed {
		if _, was := old[f]; !was && isChannel(chat) {
			joins = append(joins, join{chat, c.channelKey(chat)})
			delete(c.refused, f) // a new route is the operator's answer
		}
	}
	for f, chat := range old {
		if _, still := c.routed[f]; !still && isChannel(chat) {
			parts = append(parts, chat)
		}
	}
	c.mu.Unlock()
	if bot == nil {
		return // Start joins them
	}
	for _, j := range joins {
		bot.Join(j.ch, j.key)
	}
	for _, ch := range parts {
		bot.Part(ch, "no longer bridged")
	}
}

// IsChatID implements bridge.ChatIDChecker: a channel, or a nick for a
// query. WhatsApp ids (with @ and .) are neither, so a `chats: all` route
// does not send WhatsApp chats to IRC.
func (c *Connector) IsChatID(chat string) bool { return isChannel(chat) || validNick(chat) }

// Chats implements bridge.ChatLister: the channels the bot is in.
func (c *Connector) Chats(ctx context.Context, search string) ([]bridge.ChatInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []bridge.ChatInfo
	for f := range c.joined {
		name := f
		if r, ok := c.routed[f]; ok {
			name = r
		}
		if search == "" || strings.Contains(f, c.foldLocked(search)) {
			out = append(out, bridge.ChatInfo{ID: name, Name: name, Group: true})
		}
	}
	slices.SortFunc(out, func(a, b bridge.ChatInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// fold is the server's case-insensitive form of a nick or channel.
func (c *Connector) fold(s string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.foldLocked(s)
}

func (c *Connector) foldLocked(s string) string { return foldCase(c.casemap, s) }

// foldCase lower-cases s by the server's CASEMAPPING: ASCII letters, and
// under rfc1459 also []\^ as {}|~ (strict-rfc1459 leaves ^ alone).
func foldCase(casemap, s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		l := c
		switch {
		case 'A' <= c && c <= 'Z':
			l = c + 'a' - 'A'
		case casemap != "ascii" && (c == '[' || c == ']' || c == '\\' || (c == '^' && casemap != "strict-rfc1459")):
			l = c + 0x20
		}
		if l != c && b == nil {
			b = []byte(s)
		}
		if b != nil {
			b[i] = l
		}
	}
	if b == nil {
		return s
	}
	return string(b)
}

// warnOnce logs text and posts it as an operator notice the first time
// key is seen (until forget(key)).
func (c *Connector) warnOnce(key, text string) {
	c.mu.Lock()
	seen := c.warned[key]
	c.warned[key] = true
	sink := c.sink
	c.mu.Unlock()
	if seen {
		return
	}
	c.log.Warn(text)
	if sink != nil {
		sink.Notice(text)
	}
}

func (c *Connector) forgetLocked(key string) { delete(c.warned, key) }

// client is the bot's connection, or nil before Start.
func (c *Connector) client() ircClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bot
}

// isOwn reports whether nick is one of ours, whose lines are never relayed.
func (c *Connector) isOwn(nick string) bool {
	bot := c.client()
	return bot != nil && c.fold(nick) == c.fold(bot.Nick())
}

// chatOf is the routes' spelling of channel, so events match routes
// whatever case the server uses.
func (c *Connector) chatOf(channel string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.routed[c.foldLocked(channel)]; ok {
		return r
	}
	return channel
}

// oneLine keeps an error or server text to one log line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
