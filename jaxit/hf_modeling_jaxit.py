"""Hugging Face code for exported jaxit runs whose heads read the mean of the real tokens'
states (`method.pooling = "mean"`), which BERT's own sequence-classification model cannot
express (it pools [CLS]). `jaxit export` copies this file into the export as
`modeling_jaxit.py`; transformers loads it with `trust_remote_code=True`:

    AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)

The weights and their names are those of `BertForSequenceClassification` (bert.*, with
bert.pooler.dense as the head's dense + tanh layer, and classifier); only the pooled input
differs. Never imported by jaxit itself (it needs torch).
"""

import torch
from transformers import BertConfig, BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput


class JaxitBertConfig(BertConfig):
    model_type = "jaxit_bert"


class JaxitBertForSequenceClassification(BertForSequenceClassification):
    """BERT + jaxit's exit head on the masked mean of the last layer's token states."""

    config_class = JaxitBertConfig

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        position_ids=position_ids, inputs_embeds=inputs_embeds,
                        output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states, return_dict=True)
        hidden = out.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        pooled = torch.tanh(self.bert.pooler.dense(mean))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.problem_type == "regression":
                loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = torch.nn.functional.cross_entropy(logits.view(-1, self.num_labels),
                                                         labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=out.hidden_states,
                                        attentions=out.attentions)
