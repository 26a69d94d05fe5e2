package ircconn

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// backoff is jittered exponential backoff between connection attempts.
type backoff struct{ n int }

// next returns the wait before the next attempt: min doubled per failure,
// capped at max, then jittered down by up to half so that many bridges
// cut off together do not come back in step.
func (b *backoff) next(lo, hi time.Duration) time.Duration {
	d := hi
	if b.n < 30 && lo<<b.n < hi {
		d = lo << b.n
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// bucket is a token bucket for flood control. Its fields are guarded by
// Client.mu. tokens goes below zero when lines are reserved ahead: each
// reservation then waits its turn, in order.
type bucket struct {
	burst, rate float64 // rate < 0: no pacing
	tokens      float64
	last        time.Time
}

// reserve takes a token and returns how long to wait before using it.
func (b *bucket) reserve(now time.Time) time.Duration {
	if b.rate < 0 {
		return 0
	}
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// unreserve gives back a token whose line was not sent.
func (b *bucket) unreserve() { b.tokens = min(b.burst, b.tokens+1) }

// refill starts a new connection with a full bucket: the server's flood
// accounting is per connection.
func (b *bucket) refill(now time.Time) {
	b.tokens, b.last = b.burst, now
}

// foldCase maps s for comparison under an ISUPPORT CASEMAPPING: ascii, or
// rfc1459 (also []\~ as {}|^), or rfc1459-strict (no ~). Unknown mappings
// fold as rfc1459, the protocol's default.
func foldCase(casemap, s string) string {
	i := 0
	for i < len(s) && !foldable(casemap, s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		case casemap == "ascii":
		case c == '[' || c == ']' || c == '\\':
			b[i] = c + '{' - '['
		case c == '~' && casemap != "rfc1459-strict":
			b[i] = '^'
		}
	}
	return string(b)
}

func foldable(casemap string, c byte) bool {
	if 'A' <= c && c <= 'Z' {
		return true
	}
	if casemap == "ascii" {
		return false
	}
	return c == '[' || c == ']' || c == '\\' || (c == '~' && casemap != "rfc1459-strict")
}

// fold is Fold with c.mu held.
func (c *Client) fold(s string) string { return foldCase(c.casemap, s) }

// altNick is the nick for attempt try: nick, nick_, nick_2, nick_3, ...
// cut so that it fits nickLen.
func altNick(nick string, try, nickLen int) string {
	if try == 0 {
		return nick
	}
	suffix := "_"
	if try > 1 {
		suffix += strconv.Itoa(try)
	}
	if nickLen > 0 && len(nick)+len(suffix) > nickLen {
		nick = nick[:max(nickLen-len(suffix), 1)]
	}
	return nick + suffix
}

// isupport applies the RPL_ISUPPORT tokens we use. Called with c.mu held.
func (c *Client) isupport(tokens []string) {
	for _, t := range tokens {
		key, val, _ := strings.Cut(t, "=")
		neg := strings.HasPrefix(key, "-")
		key = strings.TrimPrefix(key, "-")
		switch key {
		case "NICKLEN":
			c.nickLen = 30
			if n, err := strconv.Atoi(val); err == nil && n > 0 && !neg {
				c.nickLen = n
			}
		case "CHANTYPES":
			c.chanType = "#&"
			if !neg {
				c.chanType = val
			}
		case "CASEMAPPING":
			cm := "rfc1459"
			if !neg && val != "" {
				cm = strings.ToLower(val)
			}
			if cm != c.casemap {
				c.casemap = cm
				c.refold()
			}
		}
	}
}

// refold rebuilds the maps keyed by folded names after CASEMAPPING changed.
func (c *Client) refold() {
	want := make(map[string]*channel, len(c.want))
	for _, ch := range c.want {
		want[c.fold(ch.name)] = ch
	}
	c.want = want
	joined := make(map[string]string, len(c.joined))
	for _, name := range c.joined {
		joined[c.fold(name)] = name
	}
	c.joined = joined
}
