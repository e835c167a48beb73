/* ngram.c: n-gram queries on rnnkit's n-gram arrays (the "n-gram queries" block of rnn.h).
 *
 * Purpose: KenLM-speed scoring of whole sentences and of KenLM's word-by-word state
 * machine, straight on the arrays of a model file (memory-mapped by rnnkit/modelfile.py),
 * with exactly the numbers of rnnkit's NumPy scoring (NgramModel._score_flat) and of
 * rnnkit.kenlm: the same float64 or float32 sums in the same order.
 *
 * Layout (rnnkit/ngram.py): the n-grams of order n are numbered 0..count[n]-1 in
 * increasing key order, key = (index of the (n-1)-gram suffix) * V + id(first word); a
 * unigram's index is its word id. Per order n >= 2 an open-addressing table (int32,
 * linear probing from slot_of(key, size), -1 = empty) gives the index of a key; the
 * vocabulary has one over the UTF-8 bytes of its units. Tables hold 2 count + 1 slots,
 * so at most half are full and an unsuccessful probe ends after ~2.5 slots.
 *
 * Nothing here trusts the arrays' contents: every index read from them is range-checked
 * before use and every probe sequence visits at most `size` slots, so corrupt or hostile
 * contents give a wrong answer or an error status, never an out-of-bounds access. The
 * struct itself (pointers and sizes) is filled by rnnkit/kernel.py from arrays it checked.
 *
 * Non-goals: allocation (caller-owned buffers; the one-sentence path keeps its values on
 * the stack), threads, building models.
 */
#include "rnn.h"

#include <string.h>

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
    case NGRAM_E_LONG: return "sentence longer than NGRAM_MAX_SENTENCE positions";
    default: return rnn_strerror(status);
    }
}

/* ------------------------------------------------------------------------------------
 * hashing
 * ---------------------------------------------------------------------------------- */

/* MurmurHash3's 64-bit finaliser: every key bit reaches every slot bit. */
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

/* A modulo, not a mask: sizes are 2 count + 1, and `%` is the same on every compiler. */
static int64_t slot_of(uint64_t hash, int64_t size) {
    return (int64_t)(hash % (uint64_t)size);
}

int64_t ngram_table_size(int64_t count) {
    if (count < 0 || count > NGRAM_MAX_COUNT) return -1;
    return 2 * count + 1;
}

static int table_args_ok(const void *table, int64_t size, const void *data, int64_t count) {
    return table && (data || count == 0) && ngram_table_size(count) == size;
}

/* Index of `key` in order n (>= 2), probing from `slot` on; -1 when it is absent. */
static int64_t find_key_from(const ngram_model *m, int n, uint64_t key, int64_t slot) {
    const int32_t *table = m->table[n];
    const int64_t *keys = m->keys[n];
    int64_t size = m->table_size[n], count = m->count[n];
    for (int64_t probes = 0; probes < size; probes++) {
        int32_t index = table[slot];
        if (index < 0) return -1;
        if (index < count && (uint64_t)keys[index] == key) return index;
        if (++slot == size) slot = 0;
    }
    return -1;
}

static int64_t find_key(const ngram_model *m, int n, uint64_t key) {
    return find_key_from(m, n, key, slot_of(mix64(key), m->table_size[n]));
}

int ngram_table_build(int32_t *table, int64_t table_size, const int64_t *keys, int64_t count) {
    if (!table_args_ok(table, table_size, keys, count)) return table ? RNN_E_SIZE : RNN_E_NULL;
    for (int64_t s = 0; s < table_size; s++) table[s] = -1;
    for (int64_t i = 0; i < count; i++) {
        int64_t slot = slot_of(mix64((uint64_t)keys[i]), table_size);
        while (table[slot] >= 0) {   /* ends: the table has more slots than keys */
            if (++slot == table_size) slot = 0;
        }
        table[slot] = (int32_t)i;
    }
    return RNN_OK;
}

int ngram_table_check(const int32_t *table, int64_t table_size, const int64_t *keys, int64_t count,
                      int64_t stride, int64_t *bad) {
    if (!bad) return RNN_E_NULL;
    *bad = -1;
    if (!table_args_ok(table, table_size, keys, count)) return table ? RNN_E_SIZE : RNN_E_NULL;
    if (stride < 1) return RNN_E_ARGUMENT;
    ngram_model probe;   /* find_key reads one order of a model */
    probe.table[2] = table;
    probe.keys[2] = keys;
    probe.table_size[2] = table_size;
    probe.count[2] = count;
    for (int64_t i = 0; i < count; i += stride) {
        if (find_key(&probe, 2, (uint64_t)keys[i]) != i) {
            *bad = i;
            return NGRAM_E_TABLE;
        }
    }
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

static int vocab_args_ok(const int32_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                         const int64_t *offsets, int64_t size) {
    return table && offsets && (text || text_size == 0) && text_size >= 0
           && ngram_table_size(size) == table_size;
}

/* Unit `id`'s bytes, or NULL when the offsets around it are out of order. */
static const uint8_t *unit_bytes(const ngram_vocab *v, int64_t id, int64_t *length) {
    int64_t start = v->offsets[id], end = v->offsets[id + 1];
    if (start < 0 || start > end || end > v->text_size) return NULL;
    *length = end - start;
    return v->text + start;
}

/* Id of the unit with these bytes, probing from `slot` on; 0 (<unk>) when it is absent. */
static int64_t find_unit_from(const ngram_vocab *v, const uint8_t *bytes, int64_t size, int64_t slot) {
    for (int64_t probes = 0; probes < v->table_size; probes++) {
        int32_t id = v->table[slot];
        if (id < 0) return 0;
        int64_t length;
        const uint8_t *unit = id < v->size ? unit_bytes(v, id, &length) : NULL;
        if (unit && length == size && memcmp(unit, bytes, (size_t)size) == 0) return id;
        if (++slot == v->table_size) slot = 0;
    }
    return 0;
}

static int64_t find_unit(const ngram_vocab *v, const uint8_t *bytes, int64_t size) {
    return find_unit_from(v, bytes, size, slot_of(hash_bytes(bytes, size), v->table_size));
}

int ngram_vocab_build(int32_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                      const int64_t *offsets, int64_t size, int64_t *bad) {
    if (!bad) return RNN_E_NULL;
    *bad = -1;
    if (!vocab_args_ok(table, table_size, text, text_size, offsets, size)) return table && offsets ? RNN_E_SIZE : RNN_E_NULL;
    if (offsets[0] != 0 || offsets[size] != text_size) return NGRAM_E_OFFSETS;
    ngram_vocab v = {text, text_size, offsets, size, table, table_size};
    for (int64_t s = 0; s < table_size; s++) table[s] = -1;
    for (int64_t id = 0; id < size; id++) {
        int64_t length;
        const uint8_t *unit = unit_bytes(&v, id, &length);
        if (!unit) {
            *bad = id;
            return NGRAM_E_OFFSETS;
        }
        int64_t slot = slot_of(hash_bytes(unit, length), table_size);
        while (table[slot] >= 0) {
            if (++slot == table_size) slot = 0;
        }
        table[slot] = (int32_t)id;
    }
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * splitting text into units, looking them up
 * ---------------------------------------------------------------------------------- */

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

/* Lookups and n-gram probes are cache misses (the tables are far bigger than the caches):
 * done one after another they cost a memory round trip each. So they run in blocks, one
 * step at a time for every member (hash and prefetch the slot; read it and prefetch what
 * it points to; compare), which keeps some NGRAM_BLOCK misses in flight at once. */
#define NGRAM_BLOCK 64

/* KenLM's word separators (units.py split_words): ASCII whitespace only. */
static int is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* The next unit of text[*at..end) under `split`; returns 0 at the end. */
static int next_unit(int split, const uint8_t *text, int64_t *at, int64_t end, int64_t *start, int64_t *length) {
    int64_t i = *at;
    if (split == NGRAM_SPLIT_WORDS) {
        while (i < end && is_space(text[i])) i++;
        if (i == end) return 0;
        *start = i;
        while (i < end && !is_space(text[i])) i++;
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

static int vocab_ok(const ngram_vocab *v) {
    return v->size >= 0 && v->table_size == ngram_table_size(v->size) && v->text_size >= 0;
}

/* The sizes kernel.py set agree (the arrays' contents are never trusted). */
static int model_ok(const ngram_model *m) {
    if (m->order < 1 || m->order > NGRAM_MAX_ORDER || m->vocab.size < 3 || m->count[1] != m->vocab.size
        || !vocab_ok(&m->vocab))
        return 0;
    for (int n = 2; n <= m->order; n++)
        if (m->table_size[n] != ngram_table_size(m->count[n])) return 0;
    return 1;
}

static int split_ok(int split) {
    return split == NGRAM_SPLIT_WORDS || split == NGRAM_SPLIT_CHARS || split == NGRAM_SPLIT_NONE;
}

/* Ids of n units (their bytes at text + start[i], length[i]), written to ids[i]. */
static void find_units(const ngram_vocab *v, const uint8_t *text, const int64_t *start, const int64_t *length,
                       int n, int64_t *ids) {
    int64_t slot[NGRAM_BLOCK];
    int32_t found[NGRAM_BLOCK];
    for (int i = 0; i < n; i++) {
        slot[i] = slot_of(hash_bytes(text + start[i], length[i]), v->table_size);
        PREFETCH(v->table + slot[i]);
    }
    for (int i = 0; i < n; i++) {
        found[i] = v->table[slot[i]];
        if (found[i] >= 0 && found[i] < v->size) PREFETCH(v->offsets + found[i]);
    }
    for (int i = 0; i < n; i++)
        if (found[i] >= 0 && found[i] < v->size && v->offsets[found[i]] >= 0 && v->offsets[found[i]] < v->text_size)
            PREFETCH(v->text + v->offsets[found[i]]);
    for (int i = 0; i < n; i++) {
        int64_t unit_length;
        const uint8_t *unit = found[i] >= 0 && found[i] < v->size ? unit_bytes(v, found[i], &unit_length) : NULL;
        if (found[i] < 0)
            ids[i] = 0;
        else if (unit && unit_length == length[i] && memcmp(unit, text + start[i], (size_t)length[i]) == 0)
            ids[i] = found[i];
        else   /* a collision: walk on from the next slot */
            ids[i] = find_unit_from(v, text + start[i], length[i], slot[i] + 1 == v->table_size ? 0 : slot[i] + 1);
    }
}

int ngram_vocab_check(const int32_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
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
 * NgramModel._score_flat's rule, position by position: the longest n-gram ending at the
 * position (found order by order, stopping at the first order without it, never
 * reaching before the segment's start), its log10 prob, plus the backoffs of the
 * k-grams ending at the previous position for k = match .. min(previous match, order-1),
 * summed from the lowest k up.
 * ---------------------------------------------------------------------------------- */

static float backoff_of(const ngram_model *m, int n, int64_t index) {
    return n < m->order ? m->backoff[n][index] : 0.0f;
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
    int64_t index[NGRAM_BLOCK];                  /* of the n-gram matched */
    float backoff[NGRAM_BLOCK][NGRAM_MAX_ORDER]; /* backoff[i][k-1]: of the k-gram ending at i */
} stream;

/* The word `back` positions before block member i (back <= its offset). */
static int64_t word_before(const stream *s, int i, int back) {
    return back <= i ? s->at[i - back].word : s->history[back - i - 1];
}

/* Longest matches for every member, order by order, their probes overlapped. */
static void match_block(stream *s) {
    const ngram_model *m = s->m;
    uint64_t V = (uint64_t)m->vocab.size;
    int active[NGRAM_BLOCK], next[NGRAM_BLOCK], count = 0;
    uint64_t key[NGRAM_BLOCK];
    int64_t slot[NGRAM_BLOCK], found[NGRAM_BLOCK];
    for (int i = 0; i < s->size; i++) {
        s->match[i] = 1;
        s->index[i] = s->at[i].word;
        if (m->order > 1) s->backoff[i][0] = m->backoff[1][s->at[i].word];
        if (m->order > 1 && s->at[i].offset >= 1) active[count++] = i;
    }
    for (int n = 2; n <= m->order && count; n++) {
        const int32_t *table = m->table[n];
        const int64_t *keys = m->keys[n];
        int64_t size = m->table_size[n], entries = m->count[n];
        for (int a = 0; a < count; a++) {
            int i = active[a];   /* key arithmetic in uint64: a corrupt index cannot overflow a signed type */
            key[i] = (uint64_t)s->index[i] * V + (uint64_t)word_before(s, i, n - 1);
            slot[i] = slot_of(mix64(key[i]), size);
            PREFETCH(table + slot[i]);
        }
        for (int a = 0; a < count; a++) {
            int i = active[a];
            found[i] = table[slot[i]];
            if (found[i] >= 0 && found[i] < entries) PREFETCH(keys + found[i]);
        }
        int kept = 0;
        for (int a = 0; a < count; a++) {
            int i = active[a];
            int64_t index = found[i];
            if (index >= 0 && !(index < entries && (uint64_t)keys[index] == key[i]))
                index = find_key_from(m, n, key[i], slot[i] + 1 == size ? 0 : slot[i] + 1);
            found[i] = index;
            if (index < 0) continue;
            PREFETCH(m->prob[n] + index);
            if (n < m->order) PREFETCH(m->backoff[n] + index);
            s->match[i] = n;
            s->index[i] = index;
            if (s->at[i].offset >= n) next[kept++] = i;
        }
        if (n < m->order)
            for (int a = 0; a < count; a++)
                if (found[active[a]] >= 0) s->backoff[active[a]][n - 1] = m->backoff[n][found[active[a]]];
        memcpy(active, next, (size_t)kept * sizeof(int));
        count = kept;
    }
}

/* log10 P of block member i as rnnkit computes it: float64 sums (NgramModel) or float32
 * (rnnkit.kenlm, as KenLM); `previous` holds the backoffs the position may charge. */
static double word_log10(const stream *s, int i) {
    int match = s->match[i], state = s->at[i].offset ? s->previous_state : 0;
    float prob = s->m->prob[match][s->index[i]];
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
        for (int k = 1; k <= s->previous_state; k++) s->previous[k] = s->backoff[i][k - 1];
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

static int precision_ok(int precision) {
    return precision == NGRAM_FLOAT64 || precision == NGRAM_FLOAT32;
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

int ngram_score_text(const ngram_model *m, int split, const char *text, int64_t text_size, int bos, int eos,
                     int precision, double slack, double *total, double *bad_value) {
    if (!m || !total || !bad_value || (!text && text_size)) return RNN_E_NULL;
    if (!model_ok(m) || text_size < 0) return RNN_E_SIZE;
    if ((bos != 0 && bos != 1) || (eos != 0 && eos != 1) || !precision_ok(precision) || !split_ok(split))
        return RNN_E_ARGUMENT;
    int64_t words[NGRAM_MAX_SENTENCE], n = 0;
    double values[NGRAM_MAX_SENTENCE];
    int status = lookup(&m->vocab, split, (const uint8_t *)text, text_size, &text_size, 1, words,
                        NGRAM_MAX_SENTENCE - eos, &n);
    if (status == RNN_E_SIZE) return NGRAM_E_LONG;
    if (status) return status;
    stream s;
    float total32 = 0.0f;
    sink out = {NULL, NULL, NULL, 0, NGRAM_MAX_SENTENCE, NULL, NULL, NULL};
    if (precision == NGRAM_FLOAT32) out.totals32 = &total32;
    else out.values = values;   /* the float64 total is numpy's sum of the values */
    open_stream(&s, m, precision, slack);
    status = push_sentence(&s, &out, words, n, bos, eos, 0, bad_value);
    if (!status) status = flush(&s, &out, bad_value);
    if (status) return status;
    *total = precision == NGRAM_FLOAT32 ? total32 : numpy_sum(values, out.used);
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * KenLM's state machine: one word after a state, no blocks to overlap
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
    /* the state's n-gram: its words (most recent first) and the backoffs of its suffixes */
    int64_t context[NGRAM_MAX_ORDER];
    float backoff[NGRAM_MAX_ORDER + 1];
    for (int k = length; k >= 1; k--) {
        backoff[k] = backoff_of(m, k, index);
        if (k == 1) {
            context[0] = index;
            break;
        }
        uint64_t key = (uint64_t)m->keys[k][index];
        if (key / V >= (uint64_t)m->count[k - 1]) return NGRAM_E_CORRUPT;
        context[k - 1] = (int64_t)(key % V);   /* the n-gram's first (oldest) word */
        index = (int64_t)(key / V);
    }
    /* the longest match of `word` after them */
    int64_t found[NGRAM_MAX_ORDER + 1];
    int top = m->order < length + 1 ? m->order : length + 1, match = 1;
    found[1] = word;
    while (match < top) {
        int64_t next = find_key(m, match + 1, (uint64_t)found[match] * V + (uint64_t)context[match - 1]);
        if (next < 0) break;
        found[++match] = next;
    }
    float sum = m->prob[match][found[match]];
    for (int k = match; k <= length; k++) sum += backoff[k];
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
