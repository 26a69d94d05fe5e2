package fakewa

import (
	"context"
	"sync"

	"go.mau.fi/libsignal/ecc"
	groupRecord "go.mau.fi/libsignal/groups/state/record"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/util/keys"
)

// signalStore is a phone's Signal state in memory: its identity, its
// prekeys, and a session per companion device. Records are kept
// serialized, as a real store keeps them, so nothing is shared by pointer
// with libsignal between calls.
type signalStore struct {
	identity *keys.KeyPair
	regID    uint32

	mu         sync.Mutex
	prekeys    map[uint32]*keys.PreKey
	signed     *keys.PreKey
	sessions   map[string][]byte
	identities map[string][32]byte
	senderKeys map[string][]byte
}

var ser = store.SignalProtobufSerializer

func newSignalStore(identity *keys.KeyPair, regID uint32, signed *keys.PreKey) *signalStore {
	return &signalStore{
		identity: identity, regID: regID, signed: signed,
		prekeys:    map[uint32]*keys.PreKey{},
		sessions:   map[string][]byte{},
		identities: map[string][32]byte{},
		senderKeys: map[string][]byte{},
	}
}

func (s *signalStore) GetIdentityKeyPair() *identity.KeyPair {
	return identity.NewKeyPair(identity.NewKey(ecc.NewDjbECPublicKey(*s.identity.Pub)), ecc.NewDjbECPrivateKey(*s.identity.Priv))
}

func (s *signalStore) GetLocalRegistrationID() uint32 { return s.regID }

func (s *signalStore) SaveIdentity(_ context.Context, addr *protocol.SignalAddress, key *identity.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identities[addr.String()] = key.PublicKey().PublicKey()
	return nil
}

// IsTrustedIdentity trusts on first use, as WhatsApp's phones do.
func (s *signalStore) IsTrustedIdentity(_ context.Context, addr *protocol.SignalAddress, key *identity.Key) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	known, ok := s.identities[addr.String()]
	return !ok || known == key.PublicKey().PublicKey(), nil
}

func (s *signalStore) LoadPreKey(_ context.Context, id uint32) (*record.PreKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.prekeys[id]
	if !ok {
		return nil, nil
	}
	return record.NewPreKey(id, ecc.NewECKeyPair(ecc.NewDjbECPublicKey(*k.Pub), ecc.NewDjbECPrivateKey(*k.Priv)), nil), nil
}

func (s *signalStore) StorePreKey(_ context.Context, id uint32, r *record.PreKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pub, priv := r.KeyPair().PublicKey().PublicKey(), r.KeyPair().PrivateKey().Serialize()
	s.prekeys[id] = &keys.PreKey{KeyID: id, KeyPair: keys.KeyPair{Pub: &pub, Priv: &priv}}
	return nil
}

func (s *signalStore) ContainsPreKey(_ context.Context, id uint32) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.prekeys[id]
	return ok, nil
}

func (s *signalStore) RemovePreKey(_ context.Context, id uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.prekeys, id)
	return nil
}

func (s *signalStore) LoadSession(_ context.Context, addr *protocol.SignalAddress) (*record.Session, error) {
	s.mu.Lock()
	raw, ok := s.sessions[addr.String()]
	s.mu.Unlock()
	if !ok {
		return record.NewSession(ser.Session, ser.State), nil
	}
	return record.NewSessionFromBytes(raw, ser.Session, ser.State)
}

func (s *signalStore) GetSubDeviceSessions(context.Context, string) ([]uint32, error) {
	return nil, nil
}

func (s *signalStore) StoreSession(_ context.Context, addr *protocol.SignalAddress, r *record.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[addr.String()] = r.Serialize()
	return nil
}

func (s *signalStore) ContainsSession(_ context.Context, addr *protocol.SignalAddress) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[addr.String()]
	return ok, nil
}

func (s *signalStore) DeleteSession(_ context.Context, addr *protocol.SignalAddress) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, addr.String())
	return nil
}

func (s *signalStore) DeleteAllSessions(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = map[string][]byte{}
	return nil
}

func (s *signalStore) LoadSignedPreKey(_ context.Context, id uint32) (*record.SignedPreKey, error) {
	if id != s.signed.KeyID {
		return nil, nil
	}
	return record.NewSignedPreKey(id, 0, ecc.NewECKeyPair(ecc.NewDjbECPublicKey(*s.signed.Pub), ecc.NewDjbECPrivateKey(*s.signed.Priv)), *s.signed.Signature, nil), nil
}

func (s *signalStore) LoadSignedPreKeys(ctx context.Context) ([]*record.SignedPreKey, error) {
	k, err := s.LoadSignedPreKey(ctx, s.signed.KeyID)
	return []*record.SignedPreKey{k}, err
}

func (s *signalStore) StoreSignedPreKey(context.Context, uint32, *record.SignedPreKey) error {
	return nil
}

func (s *signalStore) ContainsSignedPreKey(_ context.Context, id uint32) (bool, error) {
	return id == s.signed.KeyID, nil
}

func (s *signalStore) RemoveSignedPreKey(context.Context, uint32) error { return nil }

func senderKeyID(name *protocol.SenderKeyName) string {
	return name.GroupID() + "\x00" + name.Sender().String()
}

func (s *signalStore) StoreSenderKey(_ context.Context, name *protocol.SenderKeyName, r *groupRecord.SenderKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.senderKeys[senderKeyID(name)] = r.Serialize()
	return nil
}

func (s *signalStore) LoadSenderKey(_ context.Context, name *protocol.SenderKeyName) (*groupRecord.SenderKey, error) {
	s.mu.Lock()
	raw, ok := s.senderKeys[senderKeyID(name)]
	s.mu.Unlock()
	if !ok {
		return groupRecord.NewSenderKey(ser.SenderKeyRecord, ser.SenderKeyState), nil
	}
	return groupRecord.NewSenderKeyFromBytes(raw, ser.SenderKeyRecord, ser.SenderKeyState)
}
