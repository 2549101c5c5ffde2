"""From splits to what training and evaluation read: batch loaders (``loader``, generated
data mixed in) and the test set a trained model is evaluated on (``testset``)."""
