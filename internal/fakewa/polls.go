package fakewa

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"
)

// Poll votes, as WhatsApp's apps make and read them. A poll carries a
// random 32-byte message secret. A vote names the options it picks by the
// SHA-256 of their names (a PollVoteMessage), sealed with AES-256-GCM
// under a key only holders of the secret derive:
//
//	key  = HKDF-SHA256(secret, no salt, info: poll id ‖ author ‖ voter ‖ "Poll Vote"), 32 bytes
//	data = poll id ‖ 0x00 ‖ voter (the additional authenticated data)
//
// with the poll's author and the voter as user JIDs without device, in
// the form the chat names them (by LID in LID groups and LID-addressed
// chats, else by number). It goes as a PollUpdateMessage with the poll's
// message key. A phone knows the secret of the polls it sent and of those
// it received, from another phone or from a linked device.

// pollVoteInfo is the use the vote key is derived for.
const pollVoteInfo = "Poll Vote"

// knownPoll is a poll a phone has: enough to vote in it and to read votes.
type knownPoll struct {
	id      string
	chat    types.JID // the group, or the other person by number
	author  *Phone
	byLID   bool // the chat named its author by LID
	secret  []byte
	options []string
}

// authorID is the poll's author as the chat named them.
func (k *knownPoll) authorID() types.JID {
	if k.byLID {
		return k.author.LID
	}
	return k.author.PN
}

// pollCreation is msg's poll, whichever version, or nil.
func pollCreation(msg *waE2E.Message) *waE2E.PollCreationMessage {
	for _, pc := range []*waE2E.PollCreationMessage{msg.GetPollCreationMessage(), msg.GetPollCreationMessageV2(), msg.GetPollCreationMessageV3(), msg.GetPollCreationMessageV5()} {
		if pc != nil {
			return pc
		}
	}
	return nil
}

// chatKey is chat as one account's chat: a person by number, whichever
// form names them, or the group.
func (s *Server) chatKey(chat types.JID) types.JID {
	chat = chat.ToNonAD()
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.phoneOf(chat); p != nil {
		return p.PN
	}
	return chat
}

// groupByLID says whether a group names its members by LID.
func (s *Server) groupByLID(gid types.JID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[gid]
	return g != nil && g.LIDAddressing
}

// pollOf finds the poll id of chat (a group, or the other person in
// either form) among what the phone sent and received.
func (p *Phone) pollOf(chat types.JID, id string) (*knownPoll, error) {
	s := p.srv
	chat = s.chatKey(chat)
	group := chat.Server == types.GroupServer
	known := func(msg *waE2E.Message, author *Phone, byLID bool) *knownPoll {
		pc := pollCreation(msg)
		secret := msg.GetMessageContextInfo().GetMessageSecret()
		if pc == nil || len(secret) != 32 || author == nil {
			return nil
		}
		k := &knownPoll{id: id, chat: chat, author: author, byLID: byLID, secret: secret}
		for _, o := range pc.GetOptions() {
			k.options = append(k.options, o.GetOptionName())
		}
		return k
	}
	p.mu.Lock()
	rec, sent := p.sent[id]
	p.mu.Unlock()
	if sent && s.chatKey(rec.to) == chat {
		byLID := p.lidAddressed()
		if group {
			byLID = s.groupByLID(chat)
		}
		if k := known(rec.msg, p, byLID); k != nil {
			return k, nil
		}
	}
	for _, m := range p.inbox.all() {
		if m.ID != id || m.Msg == nil || s.chatKey(m.Chat) != chat {
			continue
		}
		author := p
		if !m.FromMe {
			author = s.PhoneOf(m.From.ToNonAD())
		}
		var byLID bool
		switch {
		case group:
			byLID = s.groupByLID(chat)
		case m.Node != nil:
			// From a linked device: it named itself as it addressed the chat.
			to, _ := m.Node.Attrs["to"].(types.JID)
			byLID = to.Server == types.HiddenUserServer
		case author != nil:
			byLID = author.lidAddressed()
		}
		if k := known(m.Msg, author, byLID); k != nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s's phone has no poll %s in %s", p.PushName, id, chat)
}

// voteKey derives a vote's key and additional data.
func voteKey(secret []byte, pollID string, author, voter types.JID) (key, data []byte, err error) {
	voterID := voter.ToNonAD().String()
	info := []byte(pollID + author.ToNonAD().String() + voterID + pollVoteInfo)
	key = make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, nil, info), key); err != nil {
		return nil, nil, err
	}
	return key, []byte(pollID + "\x00" + voterID), nil
}

func voteAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealVote encrypts a vote for options of poll k by voter.
func sealVote(k *knownPoll, voter types.JID, options []string) (*waE2E.PollEncValue, error) {
	hashes := make([][]byte, len(options))
	for i, o := range options {
		sum := sha256.Sum256([]byte(o))
		hashes[i] = sum[:]
	}
	plain, err := proto.Marshal(&waE2E.PollVoteMessage{SelectedOptions: hashes})
	if err != nil {
		return nil, err
	}
	key, data, err := voteKey(k.secret, k.id, k.authorID(), voter)
	if err != nil {
		return nil, err
	}
	aead, err := voteAEAD(key)
	if err != nil {
		return nil, err
	}
	iv := randomBytes(aead.NonceSize())
	return &waE2E.PollEncValue{EncPayload: aead.Seal(nil, iv, plain, data), EncIV: iv}, nil
}

// Vote has the phone vote in poll pollID of chat (a group, or the other
// person) for the options named (none withdraws its vote), as WhatsApp's
// apps do: sealed with the poll's secret, naming the options by hash. The
// phone must have the poll (sent or received it). It returns the vote's
// message id.
func (p *Phone) Vote(ctx context.Context, chat types.JID, pollID string, options ...string) (string, error) {
	k, err := p.pollOf(chat, pollID)
	if err != nil {
		return "", err
	}
	for _, o := range options {
		if !slices.Contains(k.options, o) {
			return "", fmt.Errorf("poll %s has no option %q", pollID, o)
		}
	}
	voter := p.PN
	if (k.chat.Server == types.GroupServer && p.srv.groupByLID(k.chat)) || (k.chat.Server != types.GroupServer && p.lidAddressed()) {
		voter = p.LID
	}
	enc, err := sealVote(k, voter, options)
	if err != nil {
		return "", err
	}
	// The poll's key as the voter's chat has it.
	key := &waCommon.MessageKey{ID: proto.String(pollID), FromMe: proto.Bool(k.author == p), RemoteJID: proto.String(k.chat.String())}
	if k.chat.Server == types.GroupServer {
		key.Participant = proto.String(k.authorID().String())
	} else if k.author != p {
		key.RemoteJID = proto.String(k.authorID().String())
	}
	return p.Send(ctx, k.chat, &waE2E.Message{PollUpdateMessage: &waE2E.PollUpdateMessage{
		PollCreationMessageKey: key, Vote: enc, SenderTimestampMS: proto.Int64(p.srv.clock().UnixMilli()),
	}})
}

// ReadVote decrypts a vote the phone received (m carries a
// PollUpdateMessage) with the secret of the poll it names, and returns
// the names of the options it picks, in the poll's order (none: the vote
// was withdrawn). WhatsApp's clients differ in which of an account's two
// ids they put in the key (whatsmeow uses the number for votes even where
// the chat names people by LID); the phone, knowing both of each
// account's, reads either.
func (p *Phone) ReadVote(m Message) ([]string, error) {
	upd := m.Msg.GetPollUpdateMessage()
	if upd == nil {
		return nil, errors.New("not a vote")
	}
	k, err := p.pollOf(m.Chat, upd.GetPollCreationMessageKey().GetID())
	if err != nil {
		return nil, err
	}
	voter := p.srv.PhoneOf(m.From.ToNonAD())
	if voter == nil {
		return nil, fmt.Errorf("vote from unknown %s", m.From)
	}
	var plain []byte
	err = errors.New("no key opens it")
	for _, author := range []types.JID{k.authorID(), k.author.PN, k.author.LID} {
		for _, by := range []types.JID{voter.PN, voter.LID} {
			key, data, kerr := voteKey(k.secret, k.id, author, by)
			if kerr != nil {
				return nil, kerr
			}
			aead, kerr := voteAEAD(key)
			if kerr != nil {
				return nil, kerr
			}
			if out, oerr := aead.Open(nil, upd.GetVote().GetEncIV(), upd.GetVote().GetEncPayload(), data); oerr == nil {
				plain, err = out, nil
				break
			}
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("decrypt the vote in poll %s: %w", k.id, err)
	}
	var vote waE2E.PollVoteMessage
	if err := proto.Unmarshal(plain, &vote); err != nil {
		return nil, err
	}
	var names []string
	for _, o := range k.options {
		sum := sha256.Sum256([]byte(o))
		if slices.ContainsFunc(vote.GetSelectedOptions(), func(h []byte) bool { return bytes.Equal(h, sum[:]) }) {
			names = append(names, o)
		}
	}
	if len(names) != len(vote.GetSelectedOptions()) {
		return names, fmt.Errorf("the vote names %d options, %d of them the poll's", len(vote.GetSelectedOptions()), len(names))
	}
	return names, nil
}
