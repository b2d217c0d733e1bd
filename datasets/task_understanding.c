/*
 * task_understanding.c — classify a passage into one of a few labels.
 *
 *   "Passage: the a goal team of bring ... \nTopic:" -> " sports\n"
 *
 * A passage of `words` words: neutral filler plus words of the topics;
 * the label's topic has strictly more words than any other topic, so the
 * label is a function of the passage (a test recounts it), and finding it
 * needs the whole passage, not a keyword at a fixed place.
 */
#include "tasks.h"

#define TOPIC_WORDS 8
static const char *const labels[4] = { "sports", "science", "music", "food" };
static const char *const topic_words[4][TOPIC_WORDS] = {
    { "goal", "team", "match", "coach", "score", "player", "league", "ball" },
    { "atom", "theory", "experiment", "energy", "cell", "data", "physics", "lab" },
    { "song", "melody", "guitar", "rhythm", "band", "chord", "singer", "album" },
    { "bread", "soup", "cheese", "recipe", "spice", "fruit", "dinner", "bake" },
};
#define FILLER_WORDS 16
static const char *const filler[FILLER_WORDS] = { "the", "a",  "of",   "and",  "to",   "in",   "was",   "with",
                                                  "on",  "it", "they", "then", "very", "some", "after", "we" };

const char *ftb_understanding_label(int i) { return i >= 0 && i < 4 ? labels[i] : "?"; }

int ftb_understanding_generate(const ftb_understanding_opts *o, uint64_t *rng, ftb_text *prompt, ftb_text *answer)
{
    int nw = o->words < 4 ? 4 : o->words > 1024 ? 1024 : o->words;
    int nl = o->labels < 2 ? 2 : o->labels > 4 ? 4 : o->labels;
    int label = (int)ftb_task_below(rng, (uint64_t)nl);
    /* Topic words: a third of the passage, the label's topic a strict
     * majority of them; the rest spread over the other topics. */
    int n_topic = nw / 3 < 3 ? 3 : nw / 3;
    int major = n_topic / 2 + 1;
    signed char slot[1024];
    for (int i = 0; i < nw; i++) slot[i] = -1;
    for (int i = 0; i < n_topic; i++) {
        int topic = label;
        if (i >= major) {
            topic = (int)ftb_task_below(rng, (uint64_t)(nl - 1));
            topic += topic >= label;
        }
        slot[i] = (signed char)topic;
    }
    for (int i = nw - 1; i > 0; i--) { /* shuffle the positions */
        int j = (int)ftb_task_below(rng, (uint64_t)i + 1);
        signed char t = slot[i];
        slot[i] = slot[j];
        slot[j] = t;
    }
    ftb_text_clear(prompt);
    ftb_text_printf(prompt, "Passage:");
    for (int i = 0; i < nw; i++) {
        const char *w = slot[i] < 0 ? filler[ftb_task_below(rng, FILLER_WORDS)]
                                    : topic_words[slot[i]][ftb_task_below(rng, TOPIC_WORDS)];
        ftb_text_printf(prompt, " %s", w);
    }
    ftb_text_printf(prompt, "\nTopic:");
    ftb_text_clear(answer);
    ftb_text_printf(answer, " %s\n", labels[label]);
    return label;
}
