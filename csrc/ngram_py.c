/* ngram_py.c: rnnkit._ngram_py, CPython entry points for the n-gram calls made once per
 * word or per sentence.
 *
 * Why: a decoder calls rnnkit.kenlm's BaseScore for every word, and many users score one
 * sentence per call. Through cffi and Python, the layers around the query cost as much
 * as the query (csrc/ngram.c); kenlm's own entry points are compiled (Cython). Here they
 * are C functions of the interpreter's own kind too.
 *
 * What:
 *   State   rnnkit.kenlm.State, for every kind of model. An n-gram state is one int64
 *           code (ngram_base_score's), held unboxed; the RNN and mixture scorers keep
 *           Python objects in it (_write). Compared, hashed and copied as before.
 *   Query   a model's C view: the ngram_model struct and csrc/ngram.c's function table
 *           (by address: this module does not link ngram.c, so there is one compiled
 *           copy of every query) and the object that owns the arrays, so they cannot go
 *           while it lives. Made only by rnnkit/kernel.py (ngram_query), the one place
 *           that checks what reaches C; its constructor trusts its arguments.
 *           score(): NgramModel.score of one str; word_id(): a word's id through a cache
 *           of the words seen (rnnkit.kenlm's words, C's and Python's).
 *   Kenlm   rnnkit.kenlm.Model's score, BaseScore, BaseFullScore, BeginSentenceWrite and
 *           NullContextWrite on an n-gram model.
 *
 * How: this file converts Python objects and calls the table's functions; it decides no
 * score. A call it cannot take whole (another type, keywords, a sentence that is not an
 * NFC str or is too long, a status other than 0) goes to the Python implementation of
 * the same call, which answers it or raises rnnkit's error: for Kenlm the method of the
 * same name on the Model's class, for Query.score its caller (it returns None). So the
 * semantics and every error message stay in one place. Nothing is allocated per call but
 * the result (and, for a word not seen before, room in the cache); the GIL is held (the
 * calls are short).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "rnn.h"

#if PY_VERSION_HEX < 0x030A0000   /* CPython 3.9 */
static PyObject *Py_NewRef(PyObject *object) {
    Py_INCREF(object);
    return object;
}

static PyObject *Py_XNewRef(PyObject *object) {
    Py_XINCREF(object);
    return object;
}

static int PyModule_AddObjectRef(PyObject *module, const char *name, PyObject *value) {
    Py_INCREF(value);
    if (PyModule_AddObject(module, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}
#endif

/* UTF-8 of a sentence encoded here (an ASCII str is used in place): longer ones go to Python */
#define SENTENCE_BYTES 8192

/* The word cache (Query): open addressing, entries of 32 bytes that hold the word's
 * characters (at most WORD_BYTES of them, as the str stores them: nearly every word), so
 * that a lookup costs one cache miss where a dict of str costs four. It grows from
 * WORDS_FIRST entries and starts over once WORDS_MOST are half used (16 MiB at most). */
#define WORD_BYTES 18
#define WORDS_FIRST 1024
#define WORDS_MOST (1 << 19)

static PyObject *config_error;     /* rnnkit.errors.ConfigError */
static PyObject *is_normalized;    /* unicodedata.is_normalized */
static PyObject *normalize;        /* unicodedata.normalize */
static PyObject *nfc_name;         /* "NFC" */

/* A status other than RNN_OK as rnnkit raises it: kernel._check_status's error. */
static void raise_status(int status) {
    PyObject *kernel = PyImport_ImportModule("rnnkit.kernel");
    PyObject *result = kernel ? PyObject_CallMethod(kernel, "_check_status", "i", status) : NULL;
    Py_XDECREF(kernel);
    Py_XDECREF(result);
    if (!PyErr_Occurred()) PyErr_Format(config_error, "n-gram query status %d", status);
}

/* ------------------------------------------------------------------------------------
 * State
 * ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int64_t code;       /* an n-gram state code while key is NULL (0: the null context) */
    Py_ssize_t length;  /* n-gram length: what States compare first */
    PyObject *key;      /* NULL: the key is `code` (0: ()); else the scorer's key object */
    PyObject *data;     /* what the scorer's next step needs; NULL: None */
    PyObject *owner;    /* the scorer that wrote it; NULL: never written */
} State;

static PyTypeObject State_Type;

static void state_write_code(State *state, int64_t code, PyObject *owner) {
    PyObject *key = state->key, *data = state->data, *old_owner = state->owner;
    state->code = code;
    state->length = (Py_ssize_t)(code % NGRAM_STATE_LENGTHS);
    state->key = NULL;
    state->data = NULL;
    Py_INCREF(owner);
    state->owner = owner;
    /* released last: a destructor may run Python code, which then sees a whole State */
    Py_XDECREF(key);
    Py_XDECREF(data);
    Py_XDECREF(old_owner);
}

static PyObject *State_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(config_error, "State() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);   /* zeroed: code 0, the null context */
}

static int State_traverse(State *self, visitproc visit, void *arg) {
    Py_VISIT(self->key);
    Py_VISIT(self->data);
    Py_VISIT(self->owner);
    return 0;
}

static int State_clear(State *self) {
    Py_CLEAR(self->key);
    Py_CLEAR(self->data);
    Py_CLEAR(self->owner);
    return 0;
}

static void State_dealloc(State *self) {
    PyObject_GC_UnTrack(self);
    State_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *state_key(State *self) {
    if (self->key) return Py_NewRef(self->key);
    return self->code ? PyLong_FromLongLong(self->code) : PyTuple_New(0);
}

/* (length, key): what States compare and hash, as rnnkit.kenlm has always ordered them */
static PyObject *state_order_key(State *self) {
    PyObject *key = state_key(self);
    if (!key) return NULL;
    PyObject *pair = Py_BuildValue("(nN)", self->length, key);
    return pair;
}

static PyObject *State_richcompare(PyObject *a, PyObject *b, int op) {
    if (!PyObject_TypeCheck(a, &State_Type) || !PyObject_TypeCheck(b, &State_Type)) Py_RETURN_NOTIMPLEMENTED;
    State *x = (State *)a, *y = (State *)b;
    if (!x->key && !y->key) {   /* two n-gram states: the length, then the code */
        if (x->length != y->length) Py_RETURN_RICHCOMPARE(x->length, y->length, op);
        Py_RETURN_RICHCOMPARE(x->code, y->code, op);
    }
    PyObject *first = state_order_key(x), *second = first ? state_order_key(y) : NULL, *result = NULL;
    if (second) result = PyObject_RichCompare(first, second, op);
    Py_XDECREF(first);
    Py_XDECREF(second);
    if (!result && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_SetString(config_error, "States of different kinds of model have no order");
    }
    return result;
}

static Py_hash_t State_hash(State *self) {
    PyObject *key = state_order_key(self);
    if (!key) return -1;
    Py_hash_t hash = PyObject_Hash(key);
    Py_DECREF(key);
    return hash;
}

static PyObject *State_repr(State *self) {
    return PyUnicode_FromFormat("State(length=%zd)", self->length);
}

static PyObject *State_copy(State *self, PyObject *unused) {
    (void)unused;
    State *twin = (State *)State_Type.tp_alloc(&State_Type, 0);
    if (!twin) return NULL;
    twin->code = self->code;
    twin->length = self->length;
    twin->key = Py_XNewRef(self->key);
    twin->data = Py_XNewRef(self->data);
    twin->owner = Py_XNewRef(self->owner);
    return (PyObject *)twin;
}

/* The fields are never changed in place (a write replaces them), so sharing them is safe. */
static PyObject *State_deepcopy(State *self, PyObject *memo) {
    (void)memo;
    return State_copy(self, NULL);
}

/* _write(owner, (length, key, data)): what the Python scorers write. An n-gram's key (its
 * state code, or () at length 0) is kept as the code, so that every n-gram state is one. */
static PyObject *State_write(State *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *raw = nargs == 2 ? args[1] : NULL;
    Py_ssize_t length = -1;
    if (raw && PyTuple_Check(raw) && PyTuple_GET_SIZE(raw) == 3 && PyLong_Check(PyTuple_GET_ITEM(raw, 0)))
        length = PyLong_AsSsize_t(PyTuple_GET_ITEM(raw, 0));
    if (length < 0) {
        PyErr_Clear();   /* a length beyond Py_ssize_t */
        PyErr_SetString(config_error, "State._write takes (owner, (length >= 0, key, data))");
        return NULL;
    }
    PyObject *owner = args[0], *key = PyTuple_GET_ITEM(raw, 1), *data = PyTuple_GET_ITEM(raw, 2);
    int64_t code = -1;
    if (PyLong_CheckExact(key)) {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (!overflow && value > 0 && value % NGRAM_STATE_LENGTHS == length) code = value;
    } else if (PyTuple_CheckExact(key) && PyTuple_GET_SIZE(key) == 0 && length == 0) {
        code = 0;
    }
    PyObject *old_key = self->key, *old_data = self->data, *old_owner = self->owner;
    self->code = code < 0 ? 0 : code;
    self->length = length;
    self->key = code < 0 ? Py_NewRef(key) : NULL;
    self->data = data == Py_None ? NULL : Py_NewRef(data);
    self->owner = Py_NewRef(owner);
    Py_XDECREF(old_key);
    Py_XDECREF(old_data);
    Py_XDECREF(old_owner);
    Py_RETURN_NONE;
}

static PyObject *State_get_length(State *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->length);
}

static PyObject *State_get_key(State *self, void *closure) {
    (void)closure;
    return state_key(self);
}

static PyObject *none_if_null(PyObject *value) {
    return Py_NewRef(value ? value : Py_None);
}

static PyObject *State_get_data(State *self, void *closure) {
    (void)closure;
    return none_if_null(self->data);
}

static PyObject *State_get_owner(State *self, void *closure) {
    (void)closure;
    return none_if_null(self->owner);
}

static PyGetSetDef State_getset[] = {
    {"_length", (getter)State_get_length, NULL, "n-gram length (units of context, KenLM's length)", NULL},
    {"_key", (getter)State_get_key, NULL, "what equal States share beside their length", NULL},
    {"_data", (getter)State_get_data, NULL, "what the scorer's next step needs", NULL},
    {"_owner", (getter)State_get_owner, NULL, "the scorer that wrote it (None: never written)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef State_methods[] = {
    {"_write", (PyCFunction)(void (*)(void))State_write, METH_FASTCALL, "_write(owner, (length, key, data))"},
    {"__copy__", (PyCFunction)State_copy, METH_NOARGS, NULL},
    {"__deepcopy__", (PyCFunction)State_deepcopy, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject State_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rnnkit.kenlm.State",
    .tp_doc = "The context a model scores the next word in (kenlm.State): default-constructible, "
              "copyable, comparable and hashable; BeginSentenceWrite, NullContextWrite and BaseScore "
              "write it. A State never written is the null context.",
    .tp_basicsize = sizeof(State),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = State_new,
    .tp_dealloc = (destructor)State_dealloc,
    .tp_traverse = (traverseproc)State_traverse,
    .tp_clear = (inquiry)State_clear,
    .tp_richcompare = State_richcompare,
    .tp_hash = (hashfunc)State_hash,
    .tp_repr = (reprfunc)State_repr,
    .tp_methods = State_methods,
    .tp_getset = State_getset,
};

/* ------------------------------------------------------------------------------------
 * Query
 * ---------------------------------------------------------------------------------- */

typedef struct {
    Py_hash_t hash;            /* str's hash of the word */
    int32_t id;                /* its vocabulary id; -1: the entry is empty */
    uint8_t kind, size;        /* PyUnicode_KIND; bytes of its characters */
    char data[WORD_BYTES];     /* its characters, as the str stores them */
} word_entry;

typedef struct {
    PyObject_HEAD
    const ngram_model *model;
    const ngram_functions *functions;
    PyObject *owner;    /* owns the arrays and the struct (kernel.NgramTables) */
    int split;          /* NGRAM_SPLIT_* of a sentence; -1: C does not split this model's text */
    double slack;       /* lm.POSITIVE_SLACK */
    word_entry *words;  /* the word cache: capacity entries (a power of 2, 0 before the first word) */
    size_t capacity, used;
} Query;

static PyTypeObject Query_Type;

/* Query(model address, function table address, owner, split, slack): kernel.ngram_query only. */
static PyObject *Query_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *model, *functions, *owner;
    int split;
    double slack;
    static char *names[] = {"model", "functions", "owner", "split", "slack", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!Oid", names, &PyLong_Type, &model, &PyLong_Type,
                                     &functions, &owner, &split, &slack))
        return NULL;
    Query *self = (Query *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->model = PyLong_AsVoidPtr(model);
    self->functions = PyLong_AsVoidPtr(functions);
    self->owner = Py_NewRef(owner);
    self->split = split;
    self->slack = slack;
    if (PyErr_Occurred() || !self->model || !self->functions) {
        if (!PyErr_Occurred()) PyErr_SetString(config_error, "Query needs a model's and a function table's address");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Query_dealloc(Query *self) {
    PyMem_Free(self->words);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether a str's characters can be read (before 3.12 one made by the legacy API may not
 * hold them yet); 0: an error. */
static int ready(PyObject *text) {
#if PY_VERSION_HEX < 0x030C0000
    return PyUnicode_READY(text) == 0;
#else
    (void)text;
    return 1;
#endif
}

/* Hangul syllables, the compatibility jamo and everything below U+0300 are NFC whatever
 * surrounds them (UAX #15 quick check: NFC_QC = Yes, combining class 0), and they are
 * nearly all of Korean text; any other character asks unicodedata.is_normalized. */
static int nfc_whatever_the_context(Py_UCS4 c) {
    return c < 0x300 || (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0x3131 && c <= 0x318E);
}

/* One character as UTF-8; a lone surrogate as "surrogatepass" writes it. */
static unsigned char *put_utf8(unsigned char *out, Py_UCS4 c) {
    if (c < 0x80) {
        *out++ = (unsigned char)c;
    } else if (c < 0x800) {
        *out++ = (unsigned char)(0xC0 | (c >> 6));
        *out++ = (unsigned char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *out++ = (unsigned char)(0xE0 | (c >> 12));
        *out++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        *out++ = (unsigned char)(0x80 | (c & 0x3F));
    } else {
        *out++ = (unsigned char)(0xF0 | (c >> 18));
        *out++ = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
        *out++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        *out++ = (unsigned char)(0x80 | (c & 0x3F));
    }
    return out;
}

/* The characters of one kind of str as UTF-8; *quick: all are NFC whatever the context. */
#define ENCODE(TYPE)                                                   \
    do {                                                               \
        const TYPE *in = (const TYPE *)data;                           \
        for (Py_ssize_t i = 0; i < n; i++) {                           \
            quick &= nfc_whatever_the_context(in[i]);                  \
            out = put_utf8(out, in[i]);                                \
        }                                                              \
    } while (0)

/* An NFC str's UTF-8 bytes as str.encode("utf-8", "surrogatepass") gives them: an ASCII
 * str's own, else written to buffer (SENTENCE_BYTES). 1: done; 0: not NFC, or too long
 * for the buffer; -1: an error. */
static int nfc_utf8(PyObject *text, char *buffer, const char **bytes, Py_ssize_t *size) {
    if (!ready(text)) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_IS_ASCII(text)) {
        *bytes = (const char *)PyUnicode_DATA(text);
        *size = n;
        return 1;
    }
    int kind = PyUnicode_KIND(text), quick = 1;
    const void *data = PyUnicode_DATA(text);
    unsigned char *out = (unsigned char *)buffer;
    if (n > SENTENCE_BYTES / (kind == PyUnicode_1BYTE_KIND ? 2 : kind == PyUnicode_2BYTE_KIND ? 3 : 4)) return 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        ENCODE(Py_UCS1);
    } else if (kind == PyUnicode_2BYTE_KIND) {
        ENCODE(Py_UCS2);
    } else {
        ENCODE(Py_UCS4);
    }
    if (!quick) {
        PyObject *answer = PyObject_CallFunctionObjArgs(is_normalized, nfc_name, text, NULL);
        if (!answer) return -1;
        quick = answer == Py_True;
        Py_DECREF(answer);
        if (!quick) return 0;
    }
    *bytes = buffer;
    *size = (Py_ssize_t)(out - (unsigned char *)buffer);
    return 1;
}

/* The total of one sentence in one ngram_score_text call. 1: in *total; 0: not a case
 * for this path (the caller's Python path takes it); -1: an error. */
static int sentence_total(const Query *query, PyObject *sentence, PyObject *bos, PyObject *eos, int precision,
                          double *total) {
    if (query->split < 0 || !PyUnicode_CheckExact(sentence) || !PyBool_Check(bos) || !PyBool_Check(eos)) return 0;
    char buffer[SENTENCE_BYTES];
    const char *text;
    Py_ssize_t size;
    int done = nfc_utf8(sentence, buffer, &text, &size);
    if (done <= 0) return done;
    double bad_value;
    return query->functions->score_text(query->model, query->split, text, size, bos == Py_True, eos == Py_True,
                                        precision, query->slack, total, &bad_value) == RNN_OK;
}

/* The vocabulary id of some UTF-8 bytes; -1: an error. */
static int64_t unit_id(const Query *query, const char *bytes, Py_ssize_t size) {
    int64_t id;
    int status = query->functions->unit_id(&query->model->vocab, bytes, size, &id);
    if (status != RNN_OK) {
        raise_status(status);
        return -1;
    }
    return id;
}

/* The vocabulary id of a str, as PackedVocab.id(nfc(word)) finds it; -1: an error. */
static int64_t vocabulary_id(const Query *query, PyObject *word) {
    char buffer[SENTENCE_BYTES];
    const char *bytes;
    Py_ssize_t size;
    int done = nfc_utf8(word, buffer, &bytes, &size);
    if (done) return done < 0 ? -1 : unit_id(query, bytes, size);
    /* not NFC, or too long for the buffer */
    PyObject *text = PyObject_CallFunctionObjArgs(normalize, nfc_name, word, NULL);
    PyObject *encoded = text ? PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass") : NULL;
    Py_XDECREF(text);
    if (!encoded) return -1;
    int64_t id = unit_id(query, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return id;
}

static word_entry *empty_words(size_t capacity) {
    word_entry *words = PyMem_Malloc(capacity * sizeof(word_entry));
    if (!words) return (word_entry *)PyErr_NoMemory();
    for (size_t i = 0; i < capacity; i++) words[i].id = -1;
    return words;
}

/* The entry of (hash, kind, data, size) in the cache, or the empty one where it goes. */
static word_entry *word_slot(const Query *query, Py_hash_t hash, int kind, const void *data, Py_ssize_t size) {
    size_t mask = query->capacity - 1, slot = (size_t)hash & mask;
    for (;; slot = (slot + 1) & mask) {   /* ends: the cache is at most half full */
        word_entry *entry = query->words + slot;
        if (entry->id < 0 || (entry->hash == hash && entry->kind == kind && entry->size == size
                              && memcmp(entry->data, data, (size_t)size) == 0))
            return entry;
    }
}

/* Room for one more word: twice the entries, or (at WORDS_MOST) an empty cache. */
static int make_room(Query *query) {
    if (2 * (query->used + 1) <= query->capacity) return 0;
    if (query->capacity >= WORDS_MOST) {
        for (size_t i = 0; i < query->capacity; i++) query->words[i].id = -1;
        query->used = 0;
        return 0;
    }
    size_t capacity = query->capacity ? 2 * query->capacity : WORDS_FIRST;
    word_entry *old = query->words, *words = empty_words(capacity);
    if (!words) return -1;
    size_t old_capacity = query->capacity;
    query->words = words;
    query->capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].id >= 0) *word_slot(query, old[i].hash, old[i].kind, old[i].data, old[i].size) = old[i];
    PyMem_Free(old);
    return 0;
}

/* The vocabulary id of a str (NFC-normalised, UTF-8, looked up), through the cache; -1: an error. */
static int64_t word_id(Query *query, PyObject *word) {
    Py_hash_t hash = ready(word) ? PyUnicode_Type.tp_hash(word) : -1;
    if (hash == -1) return -1;
    int kind = PyUnicode_KIND(word);
    Py_ssize_t size = PyUnicode_GET_LENGTH(word) * kind;
    const void *data = PyUnicode_DATA(word);
    if (size > WORD_BYTES) return vocabulary_id(query, word);
    if (query->capacity) {
        word_entry *entry = word_slot(query, hash, kind, data, size);
        if (entry->id >= 0) return entry->id;
    }
    int64_t id = vocabulary_id(query, word);
    if (id < 0 || make_room(query) < 0) return -1;
    word_entry *entry = word_slot(query, hash, kind, data, size);
    entry->hash = hash;
    entry->id = (int32_t)id;   /* < NGRAM_MAX_COUNT */
    entry->kind = (uint8_t)kind;
    entry->size = (uint8_t)size;
    memcpy(entry->data, data, (size_t)size);
    query->used++;
    return id;
}

/* word_id(word): the vocabulary id of a str (NFC-normalised); 0 (<unk>) when it is none. */
static PyObject *Query_word_id(Query *self, PyObject *word) {
    if (!PyUnicode_Check(word)) {
        PyErr_Format(config_error, "a word must be a str, got %s", Py_TYPE(word)->tp_name);
        return NULL;
    }
    int64_t id = word_id(self, word);
    return id < 0 ? NULL : PyLong_FromLongLong(id);
}

/* score(sentence, bos, eos): NgramModel.score of one str in one call, or None where its
 * Python path must take it (not a str, not NFC, too long, jamo units, an error status). */
static PyObject *Query_score(Query *self, PyObject *const *args, Py_ssize_t nargs) {
    double total;
    if (nargs != 3) {
        PyErr_SetString(config_error, "Query.score takes (sentence, bos, eos)");
        return NULL;
    }
    int done = sentence_total(self, args[0], args[1], args[2], NGRAM_FLOAT64, &total);
    if (done < 0) return NULL;
    if (!done) Py_RETURN_NONE;
    return PyFloat_FromDouble(total);
}

static PyMethodDef Query_methods[] = {
    {"word_id", (PyCFunction)Query_word_id, METH_O,
     "word_id(word): the vocabulary id of a str (NFC-normalised), through a cache of the words seen"},
    {"score", (PyCFunction)(void (*)(void))Query_score, METH_FASTCALL,
     "score(sentence, bos, eos): NgramModel.score in one C call, or None where Python must take it"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Query_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rnnkit._ngram_py.Query",
    .tp_doc = "An n-gram model's C view (made by rnnkit.kernel.ngram_query only).",
    .tp_basicsize = sizeof(Query),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Query_new,
    .tp_dealloc = (destructor)Query_dealloc,
    .tp_methods = Query_methods,
};

/* ------------------------------------------------------------------------------------
 * Kenlm
 * ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Query *query;
    PyObject *owner;              /* what its States hold: the model's Python scorer */
    PyTypeObject *full_return;    /* rnnkit.kenlm.FullScoreReturn (a tuple) */
    int64_t begin;                /* the state code after <s> */
    PyObject *model;              /* the rnnkit.kenlm.Model: its class's methods take the other cases */
} Kenlm;

static PyTypeObject Kenlm_Type;

/* Kenlm(query, owner, FullScoreReturn, begin state code, model): rnnkit.kenlm only. */
static PyObject *Kenlm_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *query, *owner, *full_return, *model;
    long long begin;
    static char *names[] = {"query", "owner", "full_return", "begin", "model", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OO!LO", names, &Query_Type, &query, &owner, &PyType_Type,
                                     &full_return, &begin, &model))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)full_return, &PyTuple_Type)) {
        PyErr_SetString(config_error, "Kenlm's full_return must be a tuple type");
        return NULL;
    }
    Kenlm *self = (Kenlm *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->query = (Query *)Py_NewRef(query);
    self->owner = Py_NewRef(owner);
    self->full_return = (PyTypeObject *)Py_NewRef(full_return);
    self->begin = begin;
    self->model = Py_NewRef(model);
    return (PyObject *)self;
}

static int Kenlm_traverse(Kenlm *self, visitproc visit, void *arg) {
    Py_VISIT(self->query);
    Py_VISIT(self->owner);
    Py_VISIT(self->full_return);
    Py_VISIT(self->model);
    return 0;
}

static int Kenlm_clear(Kenlm *self) {
    Py_CLEAR(self->query);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->full_return);
    Py_CLEAR(self->model);
    return 0;
}

static void Kenlm_dealloc(Kenlm *self) {
    PyObject_GC_UnTrack(self);
    Kenlm_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The Python implementation of the call: the method `name` of the Model's class, on the
 * Model (its own attribute is this module's method). */
static PyObject *in_python(Kenlm *self, const char *name, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    if (!self->model) {
        PyErr_SetString(config_error, "this Model's entry points were cleared");
        return NULL;
    }
    PyObject *function = PyObject_GetAttrString((PyObject *)Py_TYPE(self->model), name);
    if (!function) return NULL;
    PyObject *method = PyMethod_New(function, self->model);
    Py_DECREF(function);
    if (!method) return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, (size_t)nargs, kwnames);
    Py_DECREF(method);
    return result;
}

static int is_state(PyObject *object) {
    return PyObject_TypeCheck(object, &State_Type);
}

/* BaseScore's work: (in_state, word, out_state) positionally, an n-gram State of this
 * model or one never written, a str; writes out_state. 1: done; 0: not a case for this
 * path; -1: an error. */
static int step(Kenlm *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, ngram_step *out) {
    if (nargs != 3 || kwnames || !self->query) return 0;
    PyObject *in_state = args[0], *word = args[1], *out_state = args[2];
    if (!is_state(in_state) || !is_state(out_state) || !PyUnicode_Check(word)) return 0;
    const State *from = (const State *)in_state;
    if (from->key || (from->owner && from->owner != self->owner)) return 0;
    Query *query = self->query;
    int64_t id = word_id(query, word);
    if (id < 0) return -1;
    if (query->functions->base_score(query->model, from->code, id, query->slack, out) != RNN_OK) return 0;
    state_write_code((State *)out_state, out->state, self->owner);
    return 1;
}

static PyObject *Kenlm_BaseScore(Kenlm *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    ngram_step out;
    int done = step(self, args, nargs, kwnames, &out);
    if (done < 0) return NULL;
    if (!done) return in_python(self, "BaseScore", args, nargs, kwnames);
    return PyFloat_FromDouble(out.log10);
}

static PyObject *Kenlm_BaseFullScore(Kenlm *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    ngram_step out;
    int done = step(self, args, nargs, kwnames, &out);
    if (done < 0) return NULL;
    if (!done) return in_python(self, "BaseFullScore", args, nargs, kwnames);
    /* a FullScoreReturn as tuple.__new__ makes one */
    PyObject *log10 = PyFloat_FromDouble(out.log10), *length = PyLong_FromLong(out.length);
    PyObject *result = log10 && length ? self->full_return->tp_alloc(self->full_return, 3) : NULL;
    if (!result) {
        Py_XDECREF(log10);
        Py_XDECREF(length);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, log10);
    PyTuple_SET_ITEM(result, 1, length);
    PyTuple_SET_ITEM(result, 2, PyBool_FromLong(out.oov));
    return result;
}

/* BeginSentenceWrite / NullContextWrite: write `code` to a State given positionally. */
static PyObject *write_state(Kenlm *self, const char *name, int64_t code, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    if (nargs != 1 || kwnames || !self->owner || !is_state(args[0])) return in_python(self, name, args, nargs, kwnames);
    state_write_code((State *)args[0], code, self->owner);
    Py_RETURN_NONE;
}

static PyObject *Kenlm_BeginSentenceWrite(Kenlm *self, PyObject *const *args, Py_ssize_t nargs,
                                          PyObject *kwnames) {
    return write_state(self, "BeginSentenceWrite", self->begin, args, nargs, kwnames);
}

static PyObject *Kenlm_NullContextWrite(Kenlm *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return write_state(self, "NullContextWrite", 0, args, nargs, kwnames);
}

/* score(sentence, bos=True, eos=True) given positionally: KenLM's float32 total. */
static PyObject *Kenlm_score(Kenlm *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    double total;
    int done = 0;
    if (nargs >= 1 && nargs <= 3 && !kwnames && self->query) {
        done = sentence_total(self->query, args[0], nargs > 1 ? args[1] : Py_True, nargs > 2 ? args[2] : Py_True,
                              NGRAM_FLOAT32, &total);
    }
    if (done < 0) return NULL;
    if (!done) return in_python(self, "score", args, nargs, kwnames);
    return PyFloat_FromDouble(total);
}

#define KENLM_METHOD(name, doc) \
    {#name, (PyCFunction)(void (*)(void))Kenlm_##name, METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef Kenlm_methods[] = {
    KENLM_METHOD(score, "log10 P(sentence [</s>] | <s> or the null context), summed in float32 as KenLM."),
    KENLM_METHOD(BaseScore, "log10 P(word | in_state); writes the state after the word to out_state."),
    KENLM_METHOD(BaseFullScore, "BaseScore with the n-gram length used and whether the word is OOV."),
    KENLM_METHOD(BeginSentenceWrite, "Make `state` the context at the start of a sentence (after <s>)."),
    KENLM_METHOD(NullContextWrite, "Make `state` the empty context (no <s>)."),
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Kenlm_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rnnkit._ngram_py.Kenlm",
    .tp_doc = "rnnkit.kenlm.Model's per-word and per-sentence calls on an n-gram model.",
    .tp_basicsize = sizeof(Kenlm),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Kenlm_new,
    .tp_dealloc = (destructor)Kenlm_dealloc,
    .tp_traverse = (traverseproc)Kenlm_traverse,
    .tp_clear = (inquiry)Kenlm_clear,
    .tp_methods = Kenlm_methods,
};

/* ------------------------------------------------------------------------------------
 * the module
 * ---------------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rnnkit._ngram_py",
    .m_doc = "CPython entry points of rnnkit's n-gram queries (csrc/ngram_py.c).",
    .m_size = -1,
};

static PyObject *attribute_of(const char *module_name, const char *name) {
    PyObject *imported = PyImport_ImportModule(module_name);
    if (!imported) return NULL;
    PyObject *value = PyObject_GetAttrString(imported, name);
    Py_DECREF(imported);
    return value;
}

PyMODINIT_FUNC PyInit__ngram_py(void) {
    config_error = attribute_of("rnnkit.errors", "ConfigError");
    is_normalized = attribute_of("unicodedata", "is_normalized");
    normalize = attribute_of("unicodedata", "normalize");
    nfc_name = PyUnicode_InternFromString("NFC");
    if (!config_error || !is_normalized || !normalize || !nfc_name) return NULL;
    PyTypeObject *types[] = {&State_Type, &Query_Type, &Kenlm_Type};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", RNN_ABI_VERSION) < 0
        || PyModule_AddObjectRef(m, "State", (PyObject *)&State_Type) < 0
        || PyModule_AddObjectRef(m, "Query", (PyObject *)&Query_Type) < 0
        || PyModule_AddObjectRef(m, "Kenlm", (PyObject *)&Kenlm_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
