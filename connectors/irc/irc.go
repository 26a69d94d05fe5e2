package irc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
)

// Connector is one irc connector: a bot connection joins the channels the
// routes name, relays what is said there, and speaks for everyone else,
// or, in puppet mode, lets each sender's own connection speak (puppet.go).
type Connector struct {
	name  string
	log   *slog.Logger
	opts  Options
	store *bridge.Store
	rend  renderer
	// media publishes attachments as links; nil without a media server.
	media bridge.MediaPublisher
	// newClient builds the connection; tests replace it, or tune the
	// real one's settings.
	newClient func(cfg clientConfig, h ircconn.Handler) (ircClient, error)
	tune      func(*ircconn.Config)

	sent *progress
	// pups are the senders' connections in puppet mode.
	pups puppets

	mu   sync.Mutex
	sink bridge.Sink
	bot  ircClient
	// routed are the routes' fixed chats on this connector: channels,
	// which the bot joins, and nicks, for queries.
	routed []string
	// refused are channels the bot cannot be in (join refused, kicked
	// twice), by folded name, with why: sends to them fail until a join
	// succeeds.
	refused map[string]string
	// kicked is when the bot was last kicked from a channel, by folded
	// name: a second kick soon after means it stays out.
	kicked map[string]time.Time
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
		media:   env.Media,
		rend:    renderer{format: tpl, zeroWidth: o.ZeroWidthNames, colours: o.NickColors, maxLines: o.MaxLines},
		sent:    newProgress(env.Store, env.Name, log),
		refused: map[string]string{},
		kicked:  map[string]time.Time{},
		pups:    puppets{by: map[string]*puppet{}, retryMin: puppetRetryMin, retryMax: puppetRetryMax},
		warned:  map[string]bool{},
	}
	c.newClient = c.dialClient
	if o.ShowJoins {
		c.members = newMembers()
	}
	return c, nil
}

// Capabilities implements bridge.Connector. IRC has none of the extras:
// the core turns edits, reactions, deletes and replies into text (see the
// relay: section), and attachments into placeholders unless the media
// server gives them links; Send splits lines itself.
func (c *Connector) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{HTML: true, Media: c.media != nil}
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
			cfg.channels[chat] = c.opts.channelKey(chat, strings.EqualFold)
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
	var late []string // routed since the config was made
	for _, chat := range c.routed {
		if _, ok := cfg.channels[chat]; !ok && isChannel(chat) {
			late = append(late, chat)
		}
	}
	c.mu.Unlock()
	for _, chat := range late {
		cli.Join(chat, c.opts.channelKey(chat, foldEqual(cli)))
	}
	// On this machine clear text crosses no network.
	if host, _, _ := net.SplitHostPort(c.opts.Server); !c.opts.TLS && !isLoopback(host) {
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
	perr := c.stopPuppets(ctx)
	cancel()
	if perr != nil {
		return fmt.Errorf("irc connector %s: puppets did not stop in time: %w", c.name, perr)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("irc connector %s did not stop in time: %w", c.name, ctx.Err())
	}
}

// RoutedChats implements bridge.RouteWatcher: the bot joins the routed
// channels and parts those no route names any more. Nicks are queries:
// nothing to join. On a change every routed channel is joined again,
// which lifts the client's give-up on one that refused the bot: a change
// of routes is the operator's answer to such a notice.
func (c *Connector) RoutedChats(chats []string) {
	c.mu.Lock()
	old := c.routed
	if slices.Equal(old, chats) {
		c.mu.Unlock()
		return // routes resolved again, nothing new for IRC
	}
	c.routed = slices.Clone(chats)
	c.refused = map[string]string{}
	c.kicked = map[string]time.Time{}
	bot := c.bot
	c.mu.Unlock()
	if bot == nil {
		return // Start joins them
	}
	for _, chat := range chats {
		if isChannel(chat) {
			bot.Join(chat, c.opts.channelKey(chat, foldEqual(bot)))
		}
	}
	for _, chat := range old {
		if isChannel(chat) && !slices.ContainsFunc(chats, func(s string) bool { return bot.Fold(s) == bot.Fold(chat) }) {
			bot.Part(chat, "no longer bridged")
		}
	}
}

// channelKey is the configured key of channel, matched with equal.
func (o *Options) channelKey(channel string, equal func(a, b string) bool) string {
	for ch, key := range o.ChannelKeys {
		if equal(ch, channel) {
			return key
		}
	}
	return ""
}

func foldEqual(cli ircClient) func(a, b string) bool {
	return func(a, b string) bool { return cli.Fold(a) == cli.Fold(b) }
}

// IsChatID implements bridge.ChatIDChecker: a channel, or a nick for a
// query. WhatsApp ids (with @ and .) are neither, so a `chats: all` route
// does not send WhatsApp chats to IRC.
func (c *Connector) IsChatID(chat string) bool { return isChannel(chat) || validNick(chat) }

// Chats implements bridge.ChatLister: the channels the bot is in.
func (c *Connector) Chats(ctx context.Context, search string) ([]bridge.ChatInfo, error) {
	bot := c.client()
	if bot == nil {
		return nil, fmt.Errorf("%w: the IRC connection has not started", bridge.ErrChatListUnavailable)
	}
	var out []bridge.ChatInfo
	for _, ch := range bot.Channels() {
		chat := c.chatOf(bot, ch)
		if search == "" || strings.Contains(bot.Fold(chat), bot.Fold(search)) {
			out = append(out, bridge.ChatInfo{ID: chat, Name: chat, Group: true})
		}
	}
	return out, nil
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

// client is the bot's connection, or nil before Start.
func (c *Connector) client() ircClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bot
}

// isOwn reports whether nick is the bot's.
func isOwn(cli ircClient, nick string) bool {
	return cli.Fold(nick) == cli.Fold(cli.Nick())
}

// isOurs reports whether nick is the bot's or a puppet's: their lines are
// never relayed.
func (c *Connector) isOurs(cli ircClient, nick string) bool {
	return isOwn(cli, nick) || c.isPuppet(nick)
}

// chatOf is the routes' spelling of a chat, so events match routes
// whatever case the server uses.
func (c *Connector) chatOf(cli ircClient, chat string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := cli.Fold(chat)
	for _, r := range c.routed {
		if cli.Fold(r) == f {
			return r
		}
	}
	return chat
}

// isRouted reports whether a route names chat.
func (c *Connector) isRouted(cli ircClient, chat string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.routed, func(r string) bool { return cli.Fold(r) == cli.Fold(chat) })
}

// oneLine keeps an error or server text to one log line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
