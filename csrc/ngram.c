/* ngram.c: n-gram queries on rnnkit's n-gram arrays (the "n-gram queries" block of rnn.h).
 *
 * Purpose: KenLM-speed scoring of whole sentences and of KenLM's word-by-word state
 * machine, straight on the arrays of a model file (memory-mapped by rnnkit/modelfile.py),
 * with exactly the numbers of rnnkit's NumPy scoring (NgramModel._numpy_token_scores)
 * and of rnnkit.kenlm: the same float64 or float32 sums in the same order.
 *
 * Layout (rnnkit/ngram.py): the n-grams of order n are numbered 0..count[n]-1 in
 * increasing key order, key = (index of the (n-1)-gram suffix) * V + id(first word); a
 * unigram's index is its word id. Per order n >= 2 an open-addressing hash table gives
 * the index of a key; the vocabulary has one over the UTF-8 bytes of its units.
 *
 * Tables: ngram_table_size(count) int64 entries (~1.5 per key), linear probing from
 * slot = high 64 bits of hash * size. An entry is 0 when empty, else
 * (index << 32) | fingerprint, the fingerprint being the hash's low 32 bits with the
 * lowest bit set (never 0). A probe decides from the entry alone whether the key can be
 * there, so it reads the keys (or the vocabulary's bytes) only to confirm a match: one
 * cache miss per lookup instead of two. An n-gram's hash is a hash of its word ids
 * (ngram_hash), not of its key, as KenLM hashes them: a query computes every order's
 * hash from the words alone and probes all orders at once, instead of one order after
 * the other (a key needs the index the order below found). Speed is all cache misses
 * here (the tables are far bigger than the caches), and the code is shaped by that:
 * see NGRAM_BLOCK.
 *
 * Nothing here trusts the arrays' contents: every index read from them is range-checked
 * before use and every probe sequence visits at most `size` entries, so corrupt or
 * hostile contents give a wrong answer or an error status, never an out-of-bounds access.
 * The struct itself (pointers and sizes) is filled by rnnkit/kernel.py from arrays it
 * checked.
 *
 * Non-goals: allocation (caller-owned buffers; a call keeps its working set on the
 * stack, < 64 KiB), threads, building models.
 */
#include "rnn.h"

#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

/* Lookups run in blocks, one step at a time for every member (hash and prefetch the
 * entry; read it and prefetch what it points to; confirm), which keeps some NGRAM_BLOCK
 * cache misses in flight at once instead of one. */
#define NGRAM_BLOCK 64

/* Orders above the unigram whose entries a block fetches ahead of matching (match_block). */
#define NGRAM_AHEAD 2

/* ------------------------------------------------------------------------------------
 * status
 * ---------------------------------------------------------------------------------- */

const char *ngram_strerror(int status) {
    switch (status) {
    case NGRAM_E_STATE: return "state code that names no n-gram of the model";
    case NGRAM_E_OFFSETS: return "offsets are not non-decreasing from 0 to the text's size";
    case NGRAM_E_UTF8: return "a vocabulary unit is not valid UTF-8";
    case NGRAM_E_DUPLICATE: return "a vocabulary unit is not found at its own id (a duplicate unit, or a table that does not fit the vocabulary)";
    case NGRAM_E_TABLE: return "an n-gram is not found at its own index (a table that does not fit the keys)";
    case NGRAM_E_CORRUPT: return "an n-gram key names a suffix outside the order below";
    case NGRAM_E_NOT_PROBABILITY: return "a log10 probability is NaN or above 0";
    case NGRAM_E_LONG: return "sentence longer than NGRAM_MAX_SENTENCE units";
    default: return rnn_strerror(status);
    }
}

/* ------------------------------------------------------------------------------------
 * hash tables
 * ---------------------------------------------------------------------------------- */

/* MurmurHash3's 64-bit finaliser: every key bit reaches every bit of the hash. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* FNV-1a over the bytes, then mixed. */
static uint64_t hash_bytes(const uint8_t *bytes, int64_t size) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int64_t i = 0; i < size; i++) {
        h ^= bytes[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h);
}

/* The high 64 bits of a * b, the same on every compiler (tables are stored in files). */
static uint64_t mul_high(uint64_t a, uint64_t b) {
#if defined(__SIZEOF_INT128__)
    return (uint64_t)(((unsigned __int128)a * b) >> 64);
#else
    uint64_t a_lo = a & 0xffffffffu, a_hi = a >> 32, b_lo = b & 0xffffffffu, b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi;
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xffffffffu) + lo_hi;
    return a_hi * b_hi + (hi_lo >> 32) + (cross >> 32);
#endif
}

static int64_t slot_of(uint64_t hash, int64_t size) {
    return (int64_t)mul_high(hash, (uint64_t)size);
}

static uint32_t fingerprint(uint64_t hash) {
    return (uint32_t)hash | 1u;
}

static int64_t entry_index(int64_t entry) {
    return (int64_t)((uint64_t)entry >> 32);
}

/* An entry that may hold the key of this hash: its fingerprint matches. */
static int may_hold(int64_t entry, uint64_t hash) {
    return (uint32_t)(uint64_t)entry == fingerprint(hash);
}

/* The hash of a unigram, and of an n-gram from its suffix's (the n-gram without its
 * first word) and its first word: every order's hash from the word ids alone. */
static uint64_t word_hash(int64_t word) {
    return mix64((uint64_t)word + 0x9e3779b97f4a7c15ULL);
}

static uint64_t ngram_hash(uint64_t suffix_hash, int64_t first) {
    return mix64(suffix_hash ^ ((uint64_t)first * 0x9e3779b97f4a7c15ULL + 1));
}

int64_t ngram_table_size(int64_t count) {
    if (count < 0 || count > NGRAM_MAX_COUNT) return -1;
    return count + count / 2 + 1;
}

static int table_args_ok(const void *table, int64_t size, const void *data, int64_t count) {
    return table && (data || count == 0) && ngram_table_size(count) == size;
}

static void insert(int64_t *table, int64_t size, uint64_t hash, int64_t index) {
    int64_t slot = slot_of(hash, size);
    while (table[slot]) {   /* ends: the table has more entries than keys */
        if (++slot == size) slot = 0;
    }
    table[slot] = (int64_t)(((uint64_t)index << 32) | fingerprint(hash));
}

/* Index of `key` in order n (>= 2), probing from `slot` on; -1 when it is absent. */
static int64_t find_key_from(const ngram_model *m, int n, uint64_t key, uint64_t hash, int64_t slot) {
    const int64_t *table = m->table[n];
    int64_t size = m->table_size[n], count = m->count[n];
    for (int64_t probes = 0; probes < size; probes++) {
        int64_t entry = table[slot];
        if (!entry) return -1;
        if (may_hold(entry, hash)) {
            int64_t index = entry_index(entry);
            if (index < count && (uint64_t)m->keys[n][index] == key) return index;
        }
        if (++slot == size) slot = 0;
    }
    return -1;
}

/* The index in the first entry of a probe sequence whose fingerprint fits (the key is
 * not confirmed), or -1 when the sequence ends first (the key is absent): a lookup that
 * costs one memory round trip, confirmed later together with others. */
static int64_t find_candidate(const ngram_model *m, int n, uint64_t hash, int64_t slot) {
    const int64_t *table = m->table[n];
    int64_t size = m->table_size[n], count = m->count[n];
    for (int64_t probes = 0; probes < size; probes++) {
        int64_t entry = table[slot];
        if (!entry) return -1;
        if (may_hold(entry, hash) && entry_index(entry) < count) return entry_index(entry);
        if (++slot == size) slot = 0;
    }
    return -1;
}

static int64_t find_key(const ngram_model *m, int n, uint64_t key, uint64_t hash) {
    return find_key_from(m, n, key, hash, slot_of(hash, m->table_size[n]));
}

int ngram_table_build(int64_t *table, int64_t table_size, const int64_t *keys, int64_t count, int64_t V,
                      const int64_t *lower_hashes, int64_t lower_count, int64_t *hashes) {
    if (!table_args_ok(table, table_size, keys, count)) return table ? RNN_E_SIZE : RNN_E_NULL;
    if (V < 1 || lower_count < 0 || (!lower_hashes && lower_count != V)) return RNN_E_SIZE;
    memset(table, 0, (size_t)table_size * sizeof(int64_t));
    for (int64_t i = 0; i < count; i++) {
        uint64_t key = (uint64_t)keys[i], suffix = key / (uint64_t)V;
        if (suffix >= (uint64_t)lower_count) return NGRAM_E_CORRUPT;
        uint64_t suffix_hash = lower_hashes ? (uint64_t)lower_hashes[suffix] : word_hash((int64_t)suffix);
        uint64_t hash = ngram_hash(suffix_hash, (int64_t)(key % (uint64_t)V));
        insert(table, table_size, hash, i);
        if (hashes) hashes[i] = (int64_t)hash;
    }
    return RNN_OK;
}

/* The hash of n-gram `index` of order n, from its key and the keys below; 0 when a
 * key names a suffix outside the order below. */
static uint64_t hash_of(const ngram_model *m, int n, int64_t index, int *corrupt) {
    int64_t first[NGRAM_MAX_ORDER + 1];
    uint64_t V = (uint64_t)m->vocab.size;
    for (int k = n; k >= 2; k--) {
        uint64_t key = (uint64_t)m->keys[k][index];
        if (key / V >= (uint64_t)m->count[k - 1]) {
            *corrupt = 1;
            return 0;
        }
        first[k] = (int64_t)(key % V);
        index = (int64_t)(key / V);
    }
    uint64_t hash = word_hash(index);
    for (int k = 2; k <= n; k++) hash = ngram_hash(hash, first[k]);
    return hash;
}

int ngram_table_check(const ngram_model *m, int n, int64_t stride, int64_t *bad) {
    if (!m || !bad) return RNN_E_NULL;
    *bad = -1;
    if (n < 2 || n > m->order || n > NGRAM_MAX_ORDER || m->vocab.size < 1) return RNN_E_SIZE;
    for (int k = 2; k <= n; k++)
        if (m->table_size[k] != ngram_table_size(m->count[k]) || !m->table[k] || (!m->keys[k] && m->count[k]))
            return RNN_E_SIZE;
    if (stride < 1) return RNN_E_ARGUMENT;
    for (int64_t i = 0; i < m->count[n]; i += stride) {
        int corrupt = 0;
        uint64_t hash = hash_of(m, n, i, &corrupt);
        *bad = i;
        if (corrupt) return NGRAM_E_CORRUPT;
        if (find_key(m, n, (uint64_t)m->keys[n][i], hash) != i) return NGRAM_E_TABLE;
    }
    *bad = -1;
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * the vocabulary
 * ---------------------------------------------------------------------------------- */

/* Bytes of the UTF-8 sequence at text[0..size), or 0 when it is not one. Surrogates
 * (ED A0..BF) are accepted: Python writes them with "surrogatepass". */
static int utf8_length(const uint8_t *text, int64_t size) {
    uint8_t c = text[0];
    int length;
    uint8_t low = 0x80, high = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) length = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        length = 3;
        if (c == 0xE0) low = 0xA0;
    } else if (c >= 0xF0 && c <= 0xF4) {
        length = 4;
        if (c == 0xF0) low = 0x90;
        if (c == 0xF4) high = 0x8F;
    } else return 0;
    if (size < length || text[1] < low || text[1] > high) return 0;
    for (int i = 2; i < length; i++)
        if (text[i] < 0x80 || text[i] > 0xBF) return 0;
    return length;
}

static int valid_utf8(const uint8_t *text, int64_t size) {
    for (int64_t i = 0; i < size;) {
        int length = utf8_length(text + i, size - i);
        if (!length) return 0;
        i += length;
    }
    return 1;
}

static int vocab_args_ok(const int64_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                         const int64_t *offsets, int64_t size) {
    return table && offsets && (text || text_size == 0) && text_size >= 0
           && ngram_table_size(size) == table_size;
}

static int vocab_ok(const ngram_vocab *v) {
    return v->size >= 0 && v->table_size == ngram_table_size(v->size) && v->text_size >= 0;
}

/* Unit `id`'s bytes (id in [0, size)), or NULL when its offsets are out of order. */
static const uint8_t *unit_bytes(const ngram_vocab *v, int64_t id, int64_t *length) {
    int64_t start = v->offsets[id], end = v->offsets[id + 1];
    if (start < 0 || start > end || end > v->text_size) return NULL;
    *length = end - start;
    return v->text + start;
}

static int is_unit(const ngram_vocab *v, int64_t id, const uint8_t *bytes, int64_t size) {
    int64_t length;
    const uint8_t *unit = id < v->size ? unit_bytes(v, id, &length) : NULL;
    return unit && length == size && memcmp(unit, bytes, (size_t)size) == 0;
}

/* Id of the unit with these bytes, probing from `slot` on; 0 (<unk>) when it is absent. */
static int64_t find_unit_from(const ngram_vocab *v, const uint8_t *bytes, int64_t size, uint64_t hash, int64_t slot) {
    for (int64_t probes = 0; probes < v->table_size; probes++) {
        int64_t entry = v->table[slot];
        if (!entry) return 0;
        if (may_hold(entry, hash) && is_unit(v, entry_index(entry), bytes, size)) return entry_index(entry);
        if (++slot == v->table_size) slot = 0;
    }
    return 0;
}

static int64_t find_unit(const ngram_vocab *v, const uint8_t *bytes, int64_t size) {
    uint64_t hash = hash_bytes(bytes, size);
    return find_unit_from(v, bytes, size, hash, slot_of(hash, v->table_size));
}

/* Ids of n units (their bytes at text + start[i], length[i]), written to ids[i]. */
static void find_units(const ngram_vocab *v, const uint8_t *text, const int64_t *start, const int64_t *length,
                       int n, int64_t *ids) {
    uint64_t hash[NGRAM_BLOCK];
    int64_t slot[NGRAM_BLOCK], entry[NGRAM_BLOCK];
    for (int i = 0; i < n; i++) {
        hash[i] = hash_bytes(text + start[i], length[i]);
        slot[i] = slot_of(hash[i], v->table_size);
        PREFETCH(v->table + slot[i]);
    }
    for (int i = 0; i < n; i++) {
        entry[i] = v->table[slot[i]];
        if (may_hold(entry[i], hash[i]) && entry_index(entry[i]) < v->size)
            PREFETCH(v->offsets + entry_index(entry[i]));
    }
    for (int i = 0; i < n; i++) {
        int64_t id = entry_index(entry[i]);
        if (may_hold(entry[i], hash[i]) && id < v->size && v->offsets[id] >= 0 && v->offsets[id] < v->text_size)
            PREFETCH(v->text + v->offsets[id]);
    }
    for (int i = 0; i < n; i++) {
        if (!entry[i])
            ids[i] = 0;
        else if (may_hold(entry[i], hash[i]) && is_unit(v, entry_index(entry[i]), text + start[i], length[i]))
            ids[i] = entry_index(entry[i]);
        else   /* another unit there: walk on */
            ids[i] = find_unit_from(v, text + start[i], length[i], hash[i],
                                    slot[i] + 1 == v->table_size ? 0 : slot[i] + 1);
    }
}

int ngram_vocab_build(int64_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                      const int64_t *offsets, int64_t size, int64_t *bad) {
    if (!bad) return RNN_E_NULL;
    *bad = -1;
    if (!vocab_args_ok(table, table_size, text, text_size, offsets, size)) return table && offsets ? RNN_E_SIZE : RNN_E_NULL;
    if (offsets[0] != 0 || offsets[size] != text_size) return NGRAM_E_OFFSETS;
    ngram_vocab v = {text, text_size, offsets, size, table, table_size};
    memset(table, 0, (size_t)table_size * sizeof(int64_t));
    for (int64_t id = 0; id < size; id++) {
        int64_t length;
        const uint8_t *unit = unit_bytes(&v, id, &length);
        if (!unit) {
            *bad = id;
            return NGRAM_E_OFFSETS;
        }
        insert(table, table_size, hash_bytes(unit, length), id);
    }
    return RNN_OK;
}

int ngram_vocab_check(const int64_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                      const int64_t *offsets, int64_t size, int64_t *bad) {
    if (!bad) return RNN_E_NULL;
    *bad = -1;
    if (!vocab_args_ok(table, table_size, text, text_size, offsets, size)) return table && offsets ? RNN_E_SIZE : RNN_E_NULL;
    if (offsets[0] != 0 || offsets[size] != text_size) return NGRAM_E_OFFSETS;
    ngram_vocab v = {text, text_size, offsets, size, table, table_size};
    int64_t start[NGRAM_BLOCK], length[NGRAM_BLOCK], ids[NGRAM_BLOCK];
    for (int64_t first = 0; first < size; first += NGRAM_BLOCK) {
        int n = size - first < NGRAM_BLOCK ? (int)(size - first) : NGRAM_BLOCK;
        for (int i = 0; i < n; i++) {
            const uint8_t *unit = unit_bytes(&v, first + i, length + i);
            *bad = first + i;
            if (!unit) return NGRAM_E_OFFSETS;
            if (!valid_utf8(unit, length[i])) return NGRAM_E_UTF8;   /* so no offset splits a character */
            start[i] = unit - text;
        }
        find_units(&v, text, start, length, n, ids);
        for (int i = 0; i < n; i++) {
            *bad = first + i;
            if (ids[i] != first + i) return NGRAM_E_DUPLICATE;
        }
    }
    *bad = -1;
    return RNN_OK;
}

int ngram_unit_id(const ngram_vocab *vocab, const char *unit, int64_t size, int64_t *id) {
    if (!vocab || !id || (!unit && size)) return RNN_E_NULL;
    if (size < 0 || !vocab_ok(vocab)) return RNN_E_SIZE;
    *id = find_unit(vocab, (const uint8_t *)unit, size);
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * splitting text into units, looking them up
 * ---------------------------------------------------------------------------------- */

/* KenLM's word separators (units.py split_words): ASCII whitespace only. */
static int is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* The end of the word that starts at text[i] (before `end`). A separator is below 0x21,
 * and so is nothing else of most text (UTF-8 beyond ASCII is 0x80 and above): eight
 * bytes at a time are tested for such a byte, and the lowest one flagged is the first
 * (the subtraction's borrows run only upwards); from there, byte by byte. */
static int64_t word_end(const uint8_t *text, int64_t i, int64_t end) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && (defined(__GNUC__) || defined(__clang__))
    for (; i + 8 <= end; i += 8) {
        uint64_t x;
        memcpy(&x, text + i, 8);
        uint64_t low = (x - 0x2121212121212121ULL) & ~x & 0x8080808080808080ULL;
        if (low) {
            i += __builtin_ctzll(low) / 8;
            break;
        }
    }
#endif
    while (i < end && !is_space(text[i])) i++;
    return i;
}

/* The next unit of text[*at..end) under `split`; returns 0 at the end. */
static int next_unit(int split, const uint8_t *text, int64_t *at, int64_t end, int64_t *start, int64_t *length) {
    int64_t i = *at;
    if (split == NGRAM_SPLIT_WORDS) {
        while (i < end && is_space(text[i])) i++;
        if (i == end) return 0;
        *start = i;
        i = word_end(text, i, end);
    } else if (split == NGRAM_SPLIT_CHARS) {
        if (i == end) return 0;
        *start = i;
        int step = utf8_length(text + i, end - i);   /* a stray byte is a unit of its own */
        i += step ? step : 1;
    } else {   /* NGRAM_SPLIT_NONE: the whole range, once */
        if (i > end) return 0;
        *start = i;
        i = end + 1;
        *at = i;
        *length = end - *start;
        return 1;
    }
    *at = i;
    *length = i - *start;
    return 1;
}

static int split_ok(int split) {
    return split == NGRAM_SPLIT_WORDS || split == NGRAM_SPLIT_CHARS || split == NGRAM_SPLIT_NONE;
}

/* Splits texts[ends[s-1]..ends[s]) and looks the units up: ids (at most capacity) and
 * units per text. */
static int lookup(const ngram_vocab *v, int split, const uint8_t *text, int64_t text_size, const int64_t *ends,
                  int64_t n, int64_t *ids, int64_t capacity, int64_t *lengths) {
    int64_t start[NGRAM_BLOCK], length[NGRAM_BLOCK];
    int pending = 0;
    int64_t used = 0, begin = 0;
    for (int64_t s = 0; s < n; s++) {
        int64_t end = ends[s], at = begin, units = 0;
        if (end < begin || end > text_size) return NGRAM_E_OFFSETS;
        while (next_unit(split, text, &at, end, start + pending, length + pending)) {
            if (used + pending == capacity) return RNN_E_SIZE;
            units++;
            if (++pending == NGRAM_BLOCK) {
                find_units(v, text, start, length, pending, ids + used);
                used += pending;
                pending = 0;
            }
        }
        lengths[s] = units;
        begin = end;
    }
    find_units(v, text, start, length, pending, ids + used);
    return RNN_OK;
}

int ngram_lookup(const ngram_vocab *vocab, int split, const char *text, int64_t text_size,
                 const int64_t *ends, int64_t n, int64_t *ids, int64_t capacity, int64_t *lengths) {
    if (!vocab || !ends || !lengths || !ids || (!text && text_size)) return RNN_E_NULL;
    if (!split_ok(split)) return RNN_E_ARGUMENT;
    if (n < 0 || text_size < 0 || capacity < 0 || !vocab_ok(vocab)) return RNN_E_SIZE;
    return lookup(vocab, split, (const uint8_t *)text, text_size, ends, n, ids, capacity, lengths);
}

/* ------------------------------------------------------------------------------------
 * scoring
 *
 * NgramModel._numpy_token_scores's rule, position by position: the longest n-gram ending
 * at the position (found order by order, stopping at the first order without it, never
 * reaching before the segment's start), its log10 prob, plus the backoffs of the
 * k-grams ending at the previous position for k = match .. min(previous match, order-1),
 * summed from the lowest k up.
 * ---------------------------------------------------------------------------------- */

/* The sizes kernel.py set agree (the arrays' contents are never trusted). */
static int model_ok(const ngram_model *m) {
    if (m->order < 1 || m->order > NGRAM_MAX_ORDER || m->vocab.size < 3 || m->count[1] != m->vocab.size
        || !vocab_ok(&m->vocab))
        return 0;
    for (int n = 2; n <= m->order; n++)
        if (m->table_size[n] != ngram_table_size(m->count[n])) return 0;
    return 1;
}

static int precision_ok(int precision) {
    return precision == NGRAM_FLOAT64 || precision == NGRAM_FLOAT32;
}

/* One position of a stream of segments. */
typedef struct {
    int64_t word;        /* id in [0, V) */
    int64_t offset;      /* place in its segment: 0 is the segment's first position */
    int64_t sentence;    /* whose total it counts in; -1: not scored (<s>) */
} position;

/* A stream of positions is matched NGRAM_BLOCK at a time; `history` keeps the words
 * before the block that a longer n-gram may reach back to. */
typedef struct {
    const ngram_model *m;
    int precision;
    double slack;
    int64_t history[NGRAM_MAX_ORDER];            /* words before the block, most recent first */
    int history_length;
    float previous[NGRAM_MAX_ORDER + 1];         /* backoffs of the k-grams ending at the previous position */
    int previous_state;                          /* min(its match, order - 1) */
    position at[NGRAM_BLOCK];
    int size;
    int32_t match[NGRAM_BLOCK];
    int32_t index[NGRAM_BLOCK][NGRAM_MAX_ORDER]; /* index[i][n-1]: the n-gram of order n ending at i */
} stream;

/* The word `back` positions before block member i (back <= its offset). */
static int64_t word_before(const stream *s, int i, int back) {
    return back <= i ? s->at[i - back].word : s->history[back - i - 1];
}

static uint64_t key_at(const stream *s, int i, int n) {
    return (uint64_t)s->index[i][n - 2] * (uint64_t)s->m->vocab.size + (uint64_t)word_before(s, i, n - 1);
}

/* Whether no bigram ends in `word`: bigrams are numbered in key order, key = (index of
 * the last word) * V + first word, so the first bigram's last word is the lowest that
 * ends one. In lmplz's models <unk> ends none (nor <s>): an OOV word, some words in
 * seven, needs no probe above the unigram. */
static int ends_no_bigram(const ngram_model *m, int64_t word) {
    if (m->order < 2 || m->count[2] == 0) return 1;
    return (uint64_t)m->keys[2][0] >= (uint64_t)(word + 1) * (uint64_t)m->vocab.size;
}

/* The highest order member i can match: its n-grams do not reach before its segment. */
static int top_order(const stream *s, int i) {
    if (ends_no_bigram(s->m, s->at[i].word)) return 1;
    return s->at[i].offset + 1 < s->m->order ? (int)s->at[i].offset + 1 : s->m->order;
}

/* Member i's longest match, one exact lookup after the other. */
static void match_exactly(stream *s, int i) {
    const ngram_model *m = s->m;
    int top = top_order(s, i), n = 1;
    uint64_t hash = word_hash(s->at[i].word);
    while (n < top) {
        hash = ngram_hash(hash, word_before(s, i, n));
        int64_t found = find_key(m, n + 1, key_at(s, i, n + 1), hash);
        if (found < 0) break;
        s->index[i][n++] = (int32_t)found;
    }
    s->match[i] = n;
}

/* The hash of member i's n-gram of order n + ahead from its order-n hash. */
static uint64_t hash_ahead(const stream *s, int i, int n, uint64_t hash, int ahead) {
    for (int k = n; k < n + ahead; k++) hash = ngram_hash(hash, word_before(s, i, k));
    return hash;
}

/* Longest matches for every member. The entries of the first NGRAM_AHEAD orders above
 * the unigram are fetched for every member at once (the hashes need only the words);
 * then the matches are taken order by order on the fingerprints, which by then are in
 * the cache, and a member that matches order n has its entry of order n + NGRAM_AHEAD
 * fetched (most words match no bigram, so fetching every order of every member up front
 * would spend the memory system on entries nobody reads). The keys, fetched meanwhile,
 * confirm the matches all at the end; a member whose fingerprint fitted another key is
 * matched again exactly. */
static void match_block(stream *s) {
    const ngram_model *m = s->m;
    int active[NGRAM_BLOCK], next[NGRAM_BLOCK], top[NGRAM_BLOCK], count = 0;
    uint64_t hash[NGRAM_BLOCK];
    for (int i = 0; i < s->size; i++) {
        int64_t word = s->at[i].word;
        top[i] = top_order(s, i);
        s->match[i] = 1;
        s->index[i][0] = (int32_t)word;
        PREFETCH(m->prob[1] + word);
        if (m->order > 1) PREFETCH(m->backoff[1] + word);
        hash[i] = word_hash(word);
        uint64_t h = hash[i];
        for (int n = 2; n <= top[i] && n <= 1 + NGRAM_AHEAD; n++) {
            h = ngram_hash(h, word_before(s, i, n - 1));
            PREFETCH(m->table[n] + slot_of(h, m->table_size[n]));
        }
        if (top[i] > 1) active[count++] = i;
    }
    for (int n = 2; n <= m->order && count; n++) {
        int kept = 0;
        for (int a = 0; a < count; a++) {
            int i = active[a];
            hash[i] = ngram_hash(hash[i], word_before(s, i, n - 1));
            int64_t found = find_candidate(m, n, hash[i], slot_of(hash[i], m->table_size[n]));
            if (found < 0) continue;
            PREFETCH(m->keys[n] + found);
            PREFETCH(m->prob[n] + found);
            if (n < m->order) PREFETCH(m->backoff[n] + found);
            if (n + NGRAM_AHEAD <= top[i]) {
                uint64_t ahead = hash_ahead(s, i, n, hash[i], NGRAM_AHEAD);
                PREFETCH(m->table[n + NGRAM_AHEAD] + slot_of(ahead, m->table_size[n + NGRAM_AHEAD]));
            }
            s->index[i][n - 1] = (int32_t)found;
            s->match[i] = n;
            if (n < top[i]) next[kept++] = i;
        }
        memcpy(active, next, (size_t)kept * sizeof(int));
        count = kept;
    }
    for (int i = 0; i < s->size; i++)
        for (int n = 2; n <= s->match[i]; n++)
            if ((uint64_t)m->keys[n][s->index[i][n - 1]] != key_at(s, i, n)) {
                match_exactly(s, i);
                break;
            }
}

/* log10 P of block member i as rnnkit computes it: float64 sums (NgramModel) or float32
 * (rnnkit.kenlm, as KenLM); `previous` holds the backoffs the position may charge. */
static double word_log10(const stream *s, int i) {
    int match = s->match[i], state = s->at[i].offset ? s->previous_state : 0;
    float prob = s->m->prob[match][s->index[i][match - 1]];
    if (s->precision == NGRAM_FLOAT32) {
        float sum = prob;
        for (int k = match; k <= state; k++) sum += s->previous[k];
        return sum;
    }
    double value = prob;
    if (state >= match) {
        double sum = 0.0;
        for (int k = match; k <= state; k++) sum += s->previous[k];
        value += sum;
    }
    return value;
}

/* lm.checked's rule: NaN or above slack is an error; otherwise at most 0. The float32
 * path clamps as rnnkit.kenlm's min(value, 0.0) does, the float64 one as np.minimum. */
static int checked(double *value, int precision, double slack, double *bad_value) {
    if (!(*value <= slack)) {
        *bad_value = *value;
        return NGRAM_E_NOT_PROBABILITY;
    }
    if (precision == NGRAM_FLOAT32) {
        if (*value > 0.0) *value = 0.0;
    } else if (!(*value < 0.0)) {
        *value = 0.0;
    }
    return RNN_OK;
}

/* What every scored position of a stream goes to. */
typedef struct {
    double *logp;
    int32_t *match;
    uint8_t *oov;
    int64_t used, capacity;
    double *totals;       /* per sentence, float64 sums in order (or NULL) */
    float *totals32;      /* per sentence, float32 sums in order (or NULL) */
    double *values;       /* every value, for numpy_sum (or NULL); `used` counts them */
} sink;

static int flush(stream *s, sink *out, double *bad_value) {
    const ngram_model *m = s->m;
    int keep = m->order - 1;
    match_block(s);
    for (int i = 0; i < s->size; i++) {
        const position *p = s->at + i;
        if (p->sentence >= 0) {
            double value = word_log10(s, i);
            int status = checked(&value, s->precision, s->slack, bad_value);
            if (status) return status;
            if (out->logp || out->values) {
                if (out->used == out->capacity) return out->values ? NGRAM_E_LONG : RNN_E_SIZE;
                if (out->values) out->values[out->used] = value;
                if (out->logp) {
                    out->logp[out->used] = value;
                    out->match[out->used] = s->match[i];
                    out->oov[out->used] = p->word == 0;
                }
                out->used++;
            }
            if (out->totals) out->totals[p->sentence] += value;
            if (out->totals32) out->totals32[p->sentence] += (float)value;
        }
        s->previous_state = s->match[i] < keep ? s->match[i] : keep;
        for (int k = 1; k <= s->previous_state; k++) s->previous[k] = m->backoff[k][s->index[i][k - 1]];
    }
    /* the words the next block may reach back to */
    int64_t words[NGRAM_MAX_ORDER];
    int length = 0;
    for (int i = s->size - 1; i >= 0 && length < keep; i--) words[length++] = s->at[i].word;
    for (int j = 0; j < s->history_length && length < keep; j++) words[length++] = s->history[j];
    memcpy(s->history, words, (size_t)length * sizeof(int64_t));
    s->history_length = length;
    s->size = 0;
    return RNN_OK;
}

static int push(stream *s, sink *out, int64_t word, int64_t offset, int64_t sentence, double *bad_value) {
    s->at[s->size].word = word;
    s->at[s->size].offset = offset;
    s->at[s->size].sentence = sentence;
    return ++s->size == NGRAM_BLOCK ? flush(s, out, bad_value) : RNN_OK;
}

static void open_stream(stream *s, const ngram_model *m, int precision, double slack) {
    s->m = m;
    s->precision = precision;
    s->slack = slack;
    s->history_length = 0;
    s->previous_state = 0;
    s->size = 0;
}

/* One sentence: [<s>] words [</s>]. */
static int push_sentence(stream *s, sink *out, const int64_t *words, int64_t n, int bos, int eos,
                         int64_t sentence, double *bad_value) {
    int64_t offset = 0;
    int status = RNN_OK;
    if (bos) status = push(s, out, 1, offset++, -1, bad_value);   /* <s>: id 1 (rnnkit/vocab.py) */
    for (int64_t t = 0; t < n && !status; t++) {
        if (words[t] < 0 || words[t] >= s->m->vocab.size) return RNN_E_TOKEN;
        status = push(s, out, words[t], offset++, sentence, bad_value);
    }
    if (eos && !status) status = push(s, out, 2, offset, sentence, bad_value);   /* </s>: id 2 */
    return status;
}

int ngram_score_ids(const ngram_model *m, const int64_t *ids, int64_t n_ids, const int64_t *lengths,
                    int64_t n_sentences, int bos, int eos, int precision, double slack,
                    double *logp, int32_t *match, uint8_t *oov, int64_t capacity, double *totals,
                    double *bad_value) {
    if (!m || !lengths || !bad_value || !totals || (!ids && n_ids)) return RNN_E_NULL;
    if (!model_ok(m) || n_ids < 0 || n_sentences < 0 || capacity < 0) return RNN_E_SIZE;
    if ((bos != 0 && bos != 1) || (eos != 0 && eos != 1) || !precision_ok(precision)) return RNN_E_ARGUMENT;
    int per_token = logp || match || oov;
    if (per_token && !(logp && match && oov)) return RNN_E_NULL;
    int64_t used = 0;
    for (int64_t s = 0; s < n_sentences; s++) {
        if (lengths[s] < 0 || lengths[s] > n_ids - used) return RNN_E_SIZE;
        used += lengths[s];
        totals[s] = 0.0;
    }
    stream s;
    sink out = {per_token ? logp : NULL, match, oov, 0, per_token ? capacity : 0, totals, NULL, NULL};
    open_stream(&s, m, precision, slack);
    used = 0;
    if (precision == NGRAM_FLOAT64) {
        for (int64_t t = 0; t < n_sentences; t++) {
            int status = push_sentence(&s, &out, ids + used, lengths[t], bos, eos, t, bad_value);
            if (status) return status;
            used += lengths[t];
        }
        return flush(&s, &out, bad_value);
    }
    /* float32 totals are KenLM's sums, kept in float32 until they are complete: the
     * sentences go in groups whose totals fit here */
    float totals32[NGRAM_BLOCK];
    out.totals = NULL;
    out.totals32 = totals32;
    for (int64_t first = 0; first < n_sentences; first += NGRAM_BLOCK) {
        int64_t last = first + NGRAM_BLOCK < n_sentences ? first + NGRAM_BLOCK : n_sentences;
        for (int64_t t = first; t < last; t++) totals32[t - first] = 0.0f;
        for (int64_t t = first; t < last; t++) {
            int status = push_sentence(&s, &out, ids + used, lengths[t], bos, eos, t - first, bad_value);
            if (status) return status;
            used += lengths[t];
        }
        int status = flush(&s, &out, bad_value);
        if (status) return status;
        for (int64_t t = first; t < last; t++) totals[t] = totals32[t - first];
    }
    return RNN_OK;
}

/* numpy.sum of a float64 array (its pairwise summation, numpy/core/src/umath/loops_utils.h):
 * LanguageModel.score sums a sentence's values so. */
static double numpy_sum(const double *a, int64_t n) {
    if (n < 8) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += a[i];
        return sum;
    }
    if (n <= 128) {
        double r[8];
        int64_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) sum += a[i];
        return sum;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return numpy_sum(a, half) + numpy_sum(a + half, n - half);
}

/* One sentence's units, looked up on their fingerprints alone: one memory round trip
 * for all of them. fitted[i]: a fingerprint fitted (ids[i] must be confirmed); else the
 * unit is surely absent (<unk>, 0). */
static void unit_candidates(const ngram_vocab *v, const uint8_t *text, const int64_t *start, const int64_t *length,
                            int64_t n, int64_t *ids, uint8_t *fitted) {
    for (int64_t first = 0; first < n; first += NGRAM_BLOCK) {
        uint64_t hash[NGRAM_BLOCK];
        int64_t slot[NGRAM_BLOCK];
        int count = n - first < NGRAM_BLOCK ? (int)(n - first) : NGRAM_BLOCK;
        for (int i = 0; i < count; i++) {
            hash[i] = hash_bytes(text + start[first + i], length[first + i]);
            slot[i] = slot_of(hash[i], v->table_size);
            PREFETCH(v->table + slot[i]);
        }
        for (int i = 0; i < count; i++) {
            int64_t id = 0, at = slot[i];
            fitted[first + i] = 0;
            for (int64_t probes = 0; probes < v->table_size; probes++) {
                int64_t entry = v->table[at];
                if (!entry) break;
                if (may_hold(entry, hash[i]) && entry_index(entry) < v->size) {
                    id = entry_index(entry);
                    fitted[first + i] = 1;
                    PREFETCH(v->offsets + id);
                    break;
                }
                if (++at == v->table_size) at = 0;
            }
            ids[first + i] = id;
        }
    }
}

/* Every fitted candidate is the unit (its bytes were fetched while the sentence scored). */
static int units_confirmed(const ngram_vocab *v, const uint8_t *text, const int64_t *start, const int64_t *length,
                           int64_t n, const int64_t *ids, const uint8_t *fitted) {
    for (int64_t i = 0; i < n; i++)
        if (fitted[i] && v->offsets[ids[i]] >= 0 && v->offsets[ids[i]] < v->text_size)
            PREFETCH(v->text + v->offsets[ids[i]]);
    for (int64_t i = 0; i < n; i++)
        if (fitted[i] && !is_unit(v, ids[i], text + start[i], length[i])) return 0;
    return 1;
}

/* One sentence of ids into `out` (values or a float32 total). */
static int score_words(const ngram_model *m, const int64_t *words, int64_t n, int bos, int eos, int precision,
                       double slack, sink *out, double *bad_value) {
    stream s;
    open_stream(&s, m, precision, slack);
    int status = push_sentence(&s, out, words, n, bos, eos, 0, bad_value);
    return status ? status : flush(&s, out, bad_value);
}

int ngram_score_text(const ngram_model *m, int split, const char *text, int64_t text_size, int bos, int eos,
                     int precision, double slack, double *total, double *bad_value) {
    if (!m || !total || !bad_value || (!text && text_size)) return RNN_E_NULL;
    if (!model_ok(m) || text_size < 0) return RNN_E_SIZE;
    if ((bos != 0 && bos != 1) || (eos != 0 && eos != 1) || !precision_ok(precision) || !split_ok(split))
        return RNN_E_ARGUMENT;
    const uint8_t *bytes = (const uint8_t *)text;
    int64_t start[NGRAM_MAX_SENTENCE], length[NGRAM_MAX_SENTENCE], words[NGRAM_MAX_SENTENCE], n = 0, at = 0;
    uint8_t fitted[NGRAM_MAX_SENTENCE];
    double values[NGRAM_MAX_SENTENCE + 1];   /* the float64 total is numpy's sum of the values */
    float total32 = 0.0f;
    int64_t unit_start, unit_length;
    while (next_unit(split, bytes, &at, text_size, &unit_start, &unit_length)) {
        if (n == NGRAM_MAX_SENTENCE) return NGRAM_E_LONG;
        start[n] = unit_start;
        length[n++] = unit_length;
    }
    /* the units on their fingerprints, confirmed after scoring (their bytes come in
     * meanwhile); when one was another unit, all are looked up exactly and scored again */
    unit_candidates(&m->vocab, bytes, start, length, n, words, fitted);
    sink out = {NULL, NULL, NULL, 0, NGRAM_MAX_SENTENCE + 1, NULL, precision == NGRAM_FLOAT32 ? &total32 : NULL,
                precision == NGRAM_FLOAT32 ? NULL : values};
    int status = score_words(m, words, n, bos, eos, precision, slack, &out, bad_value);
    if (!units_confirmed(&m->vocab, bytes, start, length, n, words, fitted)) {
        for (int64_t first = 0; first < n; first += NGRAM_BLOCK)
            find_units(&m->vocab, bytes, start + first, length + first,
                       n - first < NGRAM_BLOCK ? (int)(n - first) : NGRAM_BLOCK, words + first);
        out.used = 0;
        total32 = 0.0f;
        status = score_words(m, words, n, bos, eos, precision, slack, &out, bad_value);
    }
    if (status) return status;
    *total = precision == NGRAM_FLOAT32 ? total32 : numpy_sum(values, out.used);
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * KenLM's state machine: one word after a state. Nothing to overlap with, so every
 * load that does not depend on the previous one is issued early.
 * ---------------------------------------------------------------------------------- */

int ngram_base_score(const ngram_model *m, int64_t state, int64_t word, double slack, ngram_step *out) {
    if (!m || !out) return RNN_E_NULL;
    if (!model_ok(m)) return RNN_E_SIZE;
    if (word < 0 || word >= m->vocab.size) return RNN_E_TOKEN;
    int length = (int)(state % NGRAM_STATE_LENGTHS);
    int64_t index = state / NGRAM_STATE_LENGTHS;
    int longest = m->order > 2 ? m->order - 1 : 1;   /* <s> alone even at order 1 */
    uint64_t V = (uint64_t)m->vocab.size;
    if (state < 0 || length > longest || (length == 0 && index != 0) || (length && index >= m->count[length]))
        return NGRAM_E_STATE;
    /* the state's n-gram: its words, most recent first, and the index of each suffix
     * (the keys were read when the previous word matched them: they are in the cache) */
    int64_t context[NGRAM_MAX_ORDER], suffix[NGRAM_MAX_ORDER + 1];
    for (int k = length; k >= 1; k--) {
        suffix[k] = index;
        if (k == 1) {
            context[0] = index;
            break;
        }
        uint64_t key = (uint64_t)m->keys[k][index];
        if (key / V >= (uint64_t)m->count[k - 1]) return NGRAM_E_CORRUPT;
        context[k - 1] = (int64_t)(key % V);   /* the n-gram's first (oldest) word */
        index = (int64_t)(key / V);
    }
    for (int k = 1; k <= length && k < m->order; k++) PREFETCH(m->backoff[k] + suffix[k]);   /* charged below */
    /* the longest match of `word` after them: every order's entry fetched at once, the
     * match taken on the fingerprints, the keys confirmed afterwards, all at once (a
     * fingerprint that fits the wrong key: matched again, exactly) */
    int64_t found[NGRAM_MAX_ORDER + 1];
    uint64_t hash[NGRAM_MAX_ORDER + 1];
    int top = ends_no_bigram(m, word) ? 1 : m->order < length + 1 ? m->order : length + 1, match = 1;
    found[1] = word;
    hash[1] = word_hash(word);
    PREFETCH(m->prob[1] + word);
    if (m->order > 1) PREFETCH(m->extendable[1] + word);   /* read below when only the unigram matches */
    for (int n = 2; n <= top; n++) {
        hash[n] = ngram_hash(hash[n - 1], context[n - 2]);
        PREFETCH(m->table[n] + slot_of(hash[n], m->table_size[n]));
    }
    while (match < top) {
        int64_t next = find_candidate(m, match + 1, hash[match + 1], slot_of(hash[match + 1], m->table_size[match + 1]));
        if (next < 0) break;
        found[++match] = next;
        PREFETCH(m->keys[match] + next);
        PREFETCH(m->prob[match] + next);
        if (match < m->order) PREFETCH(m->extendable[match] + next);
    }
    for (int n = 2; n <= match; n++) {
        if ((uint64_t)m->keys[n][found[n]] == (uint64_t)found[n - 1] * V + (uint64_t)context[n - 2]) continue;
        for (match = 1; match < top; match++) {
            int64_t next = find_key(m, match + 1, (uint64_t)found[match] * V + (uint64_t)context[match - 1],
                                    hash[match + 1]);
            if (next < 0) break;
            found[match + 1] = next;
        }
        break;
    }
    /* the backoffs of the state's n-grams the match did not reach */
    float sum = m->prob[match][found[match]];
    for (int k = match; k <= length; k++) sum += k < m->order ? m->backoff[k][suffix[k]] : 0.0f;
    double value = sum;
    int status = checked(&value, NGRAM_FLOAT32, slack, &out->log10);
    if (status) return status;
    /* KenLM keeps the longest match that a later word can still extend */
    int keep = match < m->order - 1 ? match : m->order - 1;
    while (keep > 0 && !m->extendable[keep][found[keep]]) keep--;
    out->log10 = value;
    out->length = match;
    out->oov = word == 0;
    out->state = keep ? found[keep] * NGRAM_STATE_LENGTHS + keep : 0;
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * the table rnnkit._ngram_py calls through (see rnn.h)
 * ---------------------------------------------------------------------------------- */

static const ngram_functions functions = {ngram_unit_id, ngram_score_text, ngram_base_score};

const ngram_functions *ngram_function_table(void) {
    return &functions;
}
