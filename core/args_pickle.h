/* Megatron args made from another description (an HF config, a NeMo model.yaml): written as a
 * small pickle (protocol 2) of plain values and read back by the safe pickle VM, so the model
 * description, family choice and checks are exactly those of a checkpoint with args. */
#ifndef MCOREFS_ARGS_PICKLE_H
#define MCOREFS_ARGS_PICKLE_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *b;
    size_t n, cap;
    int oom;     /* out of memory: later writes are dropped */
} pk_out;

void mf_pk_put(pk_out *o, const void *p, size_t n);
void mf_pk_byte(pk_out *o, uint8_t c);          /* an opcode */
void mf_pk_str(pk_out *o, const char *s);       /* BINUNICODE */
void mf_pk_int(pk_out *o, int64_t v);           /* LONG1, 8 bytes */
void mf_pk_float(pk_out *o, double v);          /* BINFLOAT */
void mf_pk_bool(pk_out *o, int v);              /* NEWTRUE / NEWFALSE */
/* Framing: PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP; a list: EMPTY_LIST, MARK ... APPENDS. */
#define MF_PK_DICT_BEGIN(o) (mf_pk_byte(o, 0x80), mf_pk_byte(o, 2), mf_pk_byte(o, '}'), mf_pk_byte(o, '('))
#define MF_PK_DICT_END(o) (mf_pk_byte(o, 'u'), mf_pk_byte(o, '.'))
#define MF_PK_LIST_BEGIN(o) (mf_pk_byte(o, ']'), mf_pk_byte(o, '('))
#define MF_PK_LIST_END(o) mf_pk_byte(o, 'e')
#define MF_PK_NONE(o) mf_pk_byte(o, 'N')
#define MF_PK_TUPLE2(o) mf_pk_byte(o, 0x86)

struct mf_model_s;
struct mf_pickle;
struct mf_pv;
/* The model the written args o describe: o read back by the safe pickle VM (*pk, *args), then
 * read as Megatron's args are. `file` (the describing file) is named in messages after `src`
 * (the checkpoint file the shapes are checked against); m->args_from = label + file. Frees o. */
int mf_model_from_args_pickle(struct mf_model_s *m, struct mf_pickle **pk, const struct mf_pv **args, pk_out *o,
                              const char *file, const char *label, const char *arch, const char *src);
#endif
